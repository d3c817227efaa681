"""The API key without the command line (where ``ps`` shows it): ``LMLAB_API_KEY`` or
``--api-key-file PATH`` (trailing newline stripped; a file other users can read is refused),
and the key never printed or logged."""

import logging
import os

import pytest

from lmlab.errors import ConfigError

SECRET = "sk-from-elsewhere-0123456789"


@pytest.fixture()
def started(monkeypatch):
    """`lmlab serve` up to uvicorn's Server.run, which records the app instead of serving it."""
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **kw: seen.update(app=self.config.app))
    monkeypatch.delenv("LMLAB_API_KEY", raising=False)
    return seen


def key_file(tmp_path, text, mode=0o600):
    path = tmp_path / "key"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_key_from_the_environment(model_dir, started, monkeypatch, capsys, caplog):
    from lmlab.cli import main

    monkeypatch.setenv("LMLAB_API_KEY", SECRET)
    with caplog.at_level(logging.DEBUG):
        assert main(["serve", str(model_dir), "--host", "0.0.0.0"]) == 0  # a public bind: the key is there
    assert started["app"].state.config.api_key == SECRET
    out = capsys.readouterr()
    assert "API key required" in out.out
    assert SECRET not in out.out + out.err + caplog.text


@pytest.mark.parametrize("text", [SECRET + "\n", SECRET + "\r\n", SECRET, f"  {SECRET}  \n\n"])
def test_key_from_a_file(model_dir, started, tmp_path, capsys, text):
    from lmlab.cli import main

    assert main(["serve", str(model_dir), "--api-key-file", str(key_file(tmp_path, text))]) == 0
    assert started["app"].state.config.api_key == SECRET
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err


def test_file_wins_over_environment_and_flag_with_file_is_an_error(model_dir, started, tmp_path, monkeypatch, capsys):
    from lmlab.cli import main

    monkeypatch.setenv("LMLAB_API_KEY", "sk-env-key-999999999")
    assert main(["serve", str(model_dir), "--api-key-file", str(key_file(tmp_path, SECRET))]) == 0
    assert started["app"].state.config.api_key == SECRET
    assert main(["serve", str(model_dir), "--api-key", SECRET, "--api-key-file", str(tmp_path / "key")]) == 2
    assert "one of --api-key and --api-key-file" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "empty", "blank", "short", "world-readable", "directory", "binary"])
def test_bad_key_files_are_refused_with_the_reason(tmp_path, case):
    from lmlab.serve.limits import api_key_from

    path = {"missing": lambda: tmp_path / "nope",
            "empty": lambda: key_file(tmp_path, ""),
            "blank": lambda: key_file(tmp_path, " \n"),
            "short": lambda: key_file(tmp_path, "abc\n"),
            "world-readable": lambda: key_file(tmp_path, SECRET, 0o644),
            "directory": lambda: tmp_path,
            "binary": lambda: (tmp_path / "key").write_bytes(b"\xff\xfe\x00" * 4) and os.chmod(tmp_path / "key", 0o600)
            or tmp_path / "key"}[case]()
    with pytest.raises(ConfigError) as e:
        api_key_from(None, str(path), {})
    message = str(e.value)
    assert str(path) in message and SECRET not in message
    if case == "world-readable":
        assert "chmod 600" in message


def test_precedence():
    from lmlab.serve.limits import api_key_from

    assert api_key_from(None, None, {}) is None
    assert api_key_from(None, None, {"LMLAB_API_KEY": SECRET}) == SECRET
    assert api_key_from(None, None, {"LMLAB_API_KEY": ""}) is None
    assert api_key_from("sk-flag-key-123456", None, {"LMLAB_API_KEY": SECRET}) == "sk-flag-key-123456"

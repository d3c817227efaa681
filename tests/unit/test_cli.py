import subprocess
import sys

import pytest

from lmlab.cli import COMMANDS, build_parser, main


def test_help_lists_every_stage(capsys):
    text = build_parser().format_help()
    for cmd in COMMANDS:
        assert cmd.name.split()[0] in text


def test_every_command_resolves_to_a_function():
    import importlib

    for cmd in COMMANDS:
        module, _, name = cmd.target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), cmd.name


def test_user_errors_print_a_message_not_a_traceback(tmp_path, capsys):
    assert main(["hf", "export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_model_info_and_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "lmlab", "model", "info", "gpt2-base"],
                         capture_output=True, text=True, check=True).stdout
    assert '"parameters": 124439808' in out


def test_top_level_fields_are_overrides_too(tmp_path, capsys):
    """``--init_vectors=DIR`` reaches pretrain's top-level field; a misspelt one is named, not ignored."""
    assert main(["pretrain", "--out", str(tmp_path / "p"), "--init_vector=x"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key init_vector" in err and "init_vectors" in err and "Traceback" not in err
    assert not (tmp_path / "p" / "model").exists()
    with pytest.raises(SystemExit):  # a command without a config: argparse's own error
        main(["model", "info", "gpt2-tiny", "--bogus=1"])
    assert "unrecognized arguments: --bogus=1" in capsys.readouterr().err


def test_cost_takes_the_optimizer(capsys):
    import json

    assert main(["cost", "gpt2-tiny", "--device", "a100", "--optimizer", "muon"]) == 0
    assert json.loads(capsys.readouterr().out)["optimizer"] == "muon"


def test_a_closed_pipe_ends_quietly():
    """`lmlab ... | head`: the reader goes away before the JSON is printed; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "model", "info", "gpt2-base"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has imported torch, let alone printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err, err


def test_each_error_exits_with_its_own_code_as_the_readme_says(capsys, monkeypatch):
    """The README's exit-status line and the error classes agree; main() returns the class's code."""
    import re
    from pathlib import Path

    import lmlab.cli as cli
    from lmlab.errors import ConfigError, DiskFull, LmlabError
    from lmlab.train.distributed import PeerLost
    from lmlab.train.guard import TrainingDiverged

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    line = readme[readme.index("\nExit status:"):].split("\n\n")[0]
    documented = {int(n) for n in re.findall(r"(\d+) [a-z]", line)}
    own = {TrainingDiverged.exit_code, DiskFull.exit_code, PeerLost.exit_code, LmlabError.exit_code}
    assert {ConfigError.exit_code, *own} <= documented and len(own) == 4
    for error in (ConfigError("x"), TrainingDiverged("y"), DiskFull("z"), PeerLost("w")):
        def fail(*a, error=error, **k):
            raise error
        monkeypatch.setattr(cli, "_resolve", lambda target, fail=fail: fail)
        assert main(["model", "info", "gpt2-tiny"]) == type(error).exit_code
        assert capsys.readouterr().err == f"error: {error}\n"


def test_a_full_device_anywhere_exits_4_without_a_traceback(capsys, monkeypatch, tmp_path):
    """A write outside the artifact code (metrics.jsonl, a plot) that meets ENOSPC."""
    import errno

    import lmlab.cli as cli

    def fail(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "metrics.jsonl"))
    monkeypatch.setattr(cli, "_resolve", lambda target: fail)
    assert main(["model", "info", "gpt2-tiny"]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'metrics.jsonl'}: no space left") and "Traceback" not in err

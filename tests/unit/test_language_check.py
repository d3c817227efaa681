""".ci/check-language: tracked lines about how the project was built fail with FILE:LINE; legitimate uses
of the same words (pytest's session scope, an HTTP session, /tmp/ in a usage line) pass."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "check-language"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

# Written in pieces so that this file does not trip the check itself.
SESSION = "sess" + "ion"
BAD = [
    f"Measured in the twentieth {SESSION}, F1 58.6.",
    f"Measured on the 3rd {SESSION}.",
    f"As the previous {SESSION} found, it helps.",
    "Timed on a quiet " + "machine.",
    "The target " + "is met.",
    "Data in /wo" + "rk/notes/plan.md.",
    "Under /ho" + "me/alice/data.",
    "As the " + "issue asks.",
    "The rules were pre" + "registered.",
]
GOOD = [
    f'@pytest.fixture(scope="{SESSION}")',
    f"def pytest_{SESSION}finish({SESSION}, exitstatus):",
    f"client = requests.{SESSION.capitalize()}()  # one HTTP {SESSION} for all requests",
    "python benchmarks/bench_corpus.py --tmp /tmp/bc",
    "See huggingface/tokenizers issue #1794.",
    "max_target_length: 48",
    f"Keeps this {SESSION} open.  # check-language: ignore",
]


def git_repo(tmp_path: Path, files: dict[str, str]) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    return tmp_path


def check(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT)], cwd=repo, capture_output=True, text=True)


def test_every_bad_line_is_named_by_file_and_line(tmp_path):
    repo = git_repo(tmp_path, {"docs/notes.md": "A good first line.\n" + "\n".join(BAD) + "\n"})
    result = check(repo)
    assert result.returncode == 1
    named = {line.split(": ")[0] for line in result.stdout.splitlines()}
    assert named == {f"docs/notes.md:{n}" for n in range(2, 2 + len(BAD))}


def test_legitimate_uses_of_the_same_words_pass(tmp_path):
    repo = git_repo(tmp_path, {"tests/conftest.py": "\n".join(GOOD) + "\n", "bin.dat": "\0quiet " + "machine"})
    result = check(repo)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_only_tracked_files_are_read(tmp_path):
    repo = git_repo(tmp_path, {"ok.md": "fine\n"})
    (repo / "scratch.md").write_text(BAD[0] + "\n", encoding="utf-8")  # not added
    assert check(repo).returncode == 0
    subprocess.run(["git", "add", "scratch.md"], cwd=repo, check=True)
    result = check(repo)
    assert result.returncode == 1 and result.stdout.startswith("scratch.md:1: ")


def test_outside_a_repository_it_says_so(tmp_path):
    result = check(tmp_path)
    assert result.returncode == 2 and "git repository" in result.stderr

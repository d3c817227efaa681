"""The command blocks of the docs run: each ```bash block marked ``<!-- test -->`` in docs/*.md and
README*.md, in the order of its file, on the built-in default corpus, in a temporary directory.

Marked blocks hold only `lmlab` commands that CI can afford (seconds each: the tutorial's quick
checks). The standard library's docstrings that `lmlab quickstart` writes to out/quickstart/raw/
are made here with the quickstart's own function, at 400,000 characters instead of 3 M. The
README's two top lines are CI's own commands and are not marked. The Chinese tutorial must mark
the very commands of the English one, which is the one run.
"""

import re
import shlex
from pathlib import Path

import pytest

from lmlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- test -->"


def doc_files() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.md")) + sorted(ROOT.glob("README*.md"))


def marked_blocks(path: Path) -> list[list[str]]:
    """The commands of each marked block: continuation lines joined, comments dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == MARK:
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            assert j < len(lines) and lines[j].startswith("```bash"), f"{path.name}:{i + 1}: {MARK} before no ```bash"
            k = lines.index("```", j + 1)
            text = "\n".join(lines[j + 1:k]).replace("\\\n", " ")
            blocks.append([ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")])
            i = k
        i += 1
    return blocks


def test_every_marked_block_holds_lmlab_commands_only():
    for path in doc_files():
        for block in marked_blocks(path):
            for command in block:
                assert command.startswith("lmlab ") and not re.search(r"[|;&<>$`]", command), \
                    f"{path.name}: a marked block runs lmlab commands only, without shell syntax: {command}"


def test_the_chinese_tutorial_runs_the_same_commands():
    en, zh = ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh.md"
    assert marked_blocks(zh) == marked_blocks(en)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from lmlab.quickstart import stdlib_docstrings

    work = tmp_path_factory.mktemp("docs")
    raw = work / "out" / "quickstart" / "raw"
    raw.mkdir(parents=True)
    stdlib_docstrings(raw / "stdlib_docstrings.jsonl", raw / "class_or_function.jsonl", max_chars=400_000)
    (work / "tests").symlink_to(ROOT / "tests")  # the tutorial's quick checks read tests/fixtures/
    return work


def _outputs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--out"]


@pytest.mark.parametrize("path", [p for p in doc_files() if marked_blocks(p) and not p.name.endswith(".zh.md")],
                         ids=lambda p: p.name)
def test_doc_commands_run(path, workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    for block in marked_blocks(path):
        for command in block:
            args = shlex.split(command)[1:]
            code = main(args)
            captured = capsys.readouterr()
            assert code == 0, f"{path.name}: `{command}` exited {code}: {captured.err[-2000:]}"
            assert captured.out.strip(), f"{path.name}: `{command}` printed nothing"
            for out in _outputs(args):
                target = workdir / out
                assert target.exists(), f"{path.name}: `{command}` wrote no {out}"
                if args[0] in ("pretrain", "finetune"):  # a run directory: checkpoints, metrics, the model
                    assert (target / "model" / "manifest.json").is_file(), f"{out}: no model/manifest.json"
                    assert (target / "model" / "model.safetensors").is_file() and (target / "loss.png").is_file()
                elif target.is_dir():
                    assert (target / "manifest.json").is_file(), f"{out}: no manifest.json"

"""Error messages tell a user what to run: CLI commands and options, never Python calls such as
``save_model(..., tokenizer_dir=...)`` or ``data_root=...``."""

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "lmlab"
PYTHON_CALL = re.compile(r"\w\(\.\.\.|\b[a-z_]+=\.\.\.|\buse [a-z]+_[a-z_]+\b|\b[a-z]+_[a-z_]+\(\)")


def raised_messages():
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = "".join(c.value for c in ast.walk(node.exc) if isinstance(c, ast.Constant)
                               and isinstance(c.value, str))
                yield f"{path.relative_to(SRC)}:{node.lineno}", text


def test_no_error_message_suggests_a_python_call():
    offenders = [f"{where}: {text[:120]}" for where, text in raised_messages() if PYTHON_CALL.search(text)]
    assert not offenders, "\n".join(offenders)


def test_the_pattern_catches_what_it_should():
    assert PYTHON_CALL.search("save the model with save_model(..., tokenizer_dir=...) to generate")
    assert PYTHON_CALL.search("pass --data-root DIR (data_root=...)")
    assert not PYTHON_CALL.search("run `lmlab hf import HF_DIR OUT` again; set --task.max_length=64")

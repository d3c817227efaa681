"""Static bans over lmlab's source (C6) and the torch floor (C3): no call that can run code from
a file or a string, no shell, no public default bind, and a torch without the known
torch.load advisories."""

import ast
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[2] / "src" / "lmlab"


def banned(tree: ast.AST) -> list[str]:
    """`pickle.load(s)`, `torch.load` without weights_only=True, `eval`/`exec`, a
    trust_remote_code=True or shell=True keyword, and the string "0.0.0.0" as a default."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" \
                if isinstance(f, ast.Attribute) else "?"
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load"):
                found.append(name)
            if name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant)
                                             and kw["weights_only"].value is True):
                found.append("torch.load without weights_only=True")
            for key in ("trust_remote_code", "shell"):
                if isinstance(kw.get(key), ast.Constant) and kw[key].value is True:
                    found.append(f"{key}=True")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in node.args.defaults + node.args.kw_defaults:
                if isinstance(default, ast.Constant) and default.value in ("0.0.0.0", "::"):
                    found.append(f"{node.name}: public default host")
    return found


def test_no_banned_calls_in_lmlab(figure):
    hits = {str(p.relative_to(SRC)): banned(ast.parse(p.read_text(encoding="utf-8")))
            for p in sorted(SRC.rglob("*.py"))}
    hits = {k: v for k, v in hits.items() if v}
    figure(files=len(list(SRC.rglob("*.py"))), occurrences=sum(map(len, hits.values())))
    assert not hits, hits
    # the scan finds what it is meant to find
    probe = ast.parse("import torch, pickle\ntorch.load(f)\npickle.loads(b)\neval('1')\nrun(x, shell=True)\n"
                      "from_pretrained(d, trust_remote_code=True)\ndef serve(host='0.0.0.0'): pass\n")
    assert len(banned(probe)) == 6


def test_torch_is_at_least_the_floor(figure):
    """torch.load(weights_only=True) had remote-code advisories before 2.10; lmlab's only
    torch.load (hf import --allow-pickle) needs a torch at or above it."""
    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    figure(torch=torch.__version__)
    assert version >= (2, 10), torch.__version__
    floor = (SRC.parents[1] / "pyproject.toml").read_text()
    assert '"torch>=2.10"' in floor

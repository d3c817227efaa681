"""The relative links of docs/*.md and README*.md lead somewhere: a link into the repository names
a file or folder that exists, and a link whose text is a `name` names a function or class defined
in the file it points to."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
DOCS = sorted((ROOT / "docs").glob("*.md")) + sorted(ROOT.glob("README*.md"))


def links(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # not inside code blocks
    return [(t, u) for t, u in LINK.findall(text) if not re.match(r"[a-z]+:", u) and not u.startswith("#")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_exist_and_name_what_is_there(path):
    for text, url in links(path):
        target = (path.parent / url.split("#")[0]).resolve()
        assert target.exists(), f"{path.name}: [{text}]({url}) leads nowhere"
        assert ROOT in target.parents or target == ROOT, f"{path.name}: {url} leaves the repository"
        name = re.fullmatch(r"`(\w+)`", text)
        if name and target.suffix == ".py":
            source = target.read_text(encoding="utf-8")
            assert re.search(rf"^\s*(def|class) {name[1]}\b", source, re.M), \
                f"{path.name}: {url} defines no {name[1]}"


def test_the_docs_link_into_the_code():
    assert len([u for _, u in links(ROOT / "docs" / "tutorial.md") if u.endswith(".py")]) >= 30

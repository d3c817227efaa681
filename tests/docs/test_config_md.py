"""docs/config.md is `lmlab config show --markdown` of today's code."""

from pathlib import Path

from lmlab.config_reference import show_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_config_md_is_up_to_date():
    expected = show_config(markdown=True) + "\n"  # as printed
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if current != expected:
        diff = [f"  {a!r}\n  {b!r}" for a, b in zip(current.splitlines(), expected.splitlines()) if a != b][:3]
        raise AssertionError("docs/config.md is out of date: run `lmlab config show --markdown > docs/config.md`"
                             + ("; first differences (file, code):\n" + "\n".join(diff) if diff else ""))

"""Fonts for matplotlib labels that may hold Chinese: DejaVu Sans, then an installed CJK family.

matplotlib's default DejaVu Sans has no CJK glyphs and draws boxes, so labels get a family list
— DejaVu Sans, then a given font file or the first installed family of `CJK_FAMILIES` — and
matplotlib (≥ 3.6) falls back glyph by glyph. Every label character is checked against the
fonts' character maps first; a character no font covers is an error naming it and the fix
(Debian/Ubuntu: ``apt-get install fonts-noto-cjk`` or ``fonts-wqy-zenhei``), never a silent
box. Shared by `lmlab.viz` and `lmlab.embeddings.plot` (neither stage depends on the other).
"""

from __future__ import annotations

from lmlab.errors import DataError

CJK_FAMILIES = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
                "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback", "AR PL UMing CN",
                "Noto Sans CJK JP"]


def font_files(font: str | None = None) -> list[tuple[str, str]]:
    """(family, file) pairs to draw labels with: DejaVu Sans, then `font` (a file) or a CJK family."""
    from pathlib import Path

    from matplotlib import font_manager

    chosen = [("DejaVu Sans", font_manager.findfont("DejaVu Sans"))]
    if font:
        if not Path(font).is_file():
            raise DataError(f"{font}: font file not found")
        font_manager.fontManager.addfont(font)
        return [(font_manager.FontProperties(fname=font).get_name(), font)] + chosen
    by_name = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in by_name:
            chosen.append((family, by_name[family]))
            break
    return chosen


def uncovered(text: str, files: list[str]) -> list[str]:
    from matplotlib.ft2font import FT2Font

    covered: set[int] = set()
    for f in files:
        covered |= set(FT2Font(f).get_charmap())
    return sorted({ch for ch in text if not ch.isspace() and ord(ch) not in covered and ch not in "␣↵"})


def plot_fonts(text: str, font: str | None = None) -> list[str]:
    """Family list for labels made of `text`'s characters; DataError if one has no glyph."""
    fonts = font_files(font)
    bad = uncovered(text, [f for _, f in fonts])
    if bad:
        raise DataError(f"no installed font has glyphs for {''.join(bad[:20])!r}; install a CJK font "
                        "(Debian/Ubuntu: apt-get install fonts-noto-cjk or fonts-wqy-microhei) or give a font file")
    return [name for name, _ in fonts]

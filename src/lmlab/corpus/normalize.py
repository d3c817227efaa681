"""Text normalisation: each step is a pure ``str -> str`` function; `Normalizer` chains them.

Order matters and is fixed (`NormalizeConfig` only switches steps on or off):
HTML → Unicode NFKC → full-width ASCII → zero-width characters → control characters and
whitespace → lowercase → Traditional→Simplified Chinese. HTML goes first because entities
(``&amp;nbsp;``) decode into characters that the later steps must see; whitespace goes after
NFKC because NFKC maps U+3000 and friends to ordinary spaces.

Zero-width *joiners* (U+200D ZWJ, U+200C ZWNJ) are kept by default: ZWJ holds emoji
sequences such as 👩‍💻 together and ZWNJ is orthographic in Persian; the invisible ones
with no such role (U+200B, U+2060, U+FEFF, soft hyphen U+00AD) are removed.

References: Unicode UAX #15 (normalisation forms); HTML5 named character references
(`html.unescape`); OpenCC (https://github.com/BYVoid/OpenCC) for t2s conversion.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

from lmlab.errors import ConfigError

_BLOCK_TAG = re.compile(r"<\s*(br|/p|p|/div|div|/li|li|/h[1-6]|tr|/tr)\b[^<>]{0,200}?/?\s*>", re.I)
_ANY_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][a-zA-Z0-9:-]{0,30}\b[^<>]{0,500}?/?\s*>")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_SCRIPT = re.compile(r"<\s*(script|style)\b[^>]*>.*?<\s*/\s*\1\s*>", re.I | re.S)
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad\u180e"))
_ZERO_WIDTH_ALL = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad\u180e\u200c\u200d"))
# Full-width ASCII U+FF01..U+FF5E → U+0021..U+007E; ideographic space → space.
_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_FULLWIDTH_ANY = re.compile("[\uff01-\uff5e\u3000]")
_ZERO_WIDTH_ANY = re.compile("[\u200b\u2060\ufeff\u00ad\u180e\u200c\u200d]")


def strip_html(text: str) -> str:
    """Remove tags and decode entities; line-breaking tags (``<br />``, ``</p>``) become newlines."""
    if "<" in text:
        text = _SCRIPT.sub(" ", text)
        text = _COMMENT.sub(" ", text)
        text = _BLOCK_TAG.sub("\n", text)
        text = _ANY_TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return text


def nfkc(text: str) -> str:
    """Unicode compatibility composition (UAX #15): ﬁ→fi, ①→1, full-width → ASCII, …"""
    return unicodedata.normalize("NFKC", text)


def fullwidth_to_halfwidth(text: str) -> str:
    """Full-width ASCII forms U+FF01–U+FF5E (ＡＢＣ１２３！，) and U+3000 → ASCII; other CJK
    punctuation (。、「」) stays. NFKC implies this mapping."""
    # translate() is slow on characters it does not map; most texts have none to map
    return text.translate(_FULLWIDTH) if _FULLWIDTH_ANY.search(text) else text


def remove_zero_width(text: str, keep_joiners: bool = True) -> str:
    """Drop invisible zero-width characters; keep ZWJ/ZWNJ unless `keep_joiners` is false."""
    if not _ZERO_WIDTH_ANY.search(text):
        return text
    return text.translate(_ZERO_WIDTH if keep_joiners else _ZERO_WIDTH_ALL)


# Control (Cc, except tab/newline/CR), private-use (Co) and lone surrogate (Cs) code points.
_DROPPED_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\U000f0000-\U0010ffff]")


def normalize_whitespace(text: str) -> str:
    """CRLF/CR → LF; other control characters (NUL, ESC, …) removed; runs of spaces and tabs →
    one space; spaces at line ends stripped; three or more newlines → one blank line; the whole
    text stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _DROPPED_CONTROL.sub("", text)
    out: list[str] = []
    blank = False
    for line in text.split("\n"):
        line = " ".join(line.split())  # str.split() collapses every kind of Unicode space, in C
        if line:
            if blank and out:
                out.append("")
            out.append(line)
            blank = False
        else:
            blank = True
    return "\n".join(out)


def lowercase(text: str) -> str:
    return text.lower()


_OPENCC: dict[str, object] = {}


def traditional_to_simplified(text: str) -> str:
    """Traditional → Simplified Chinese with OpenCC's ``t2s`` table (phrase-aware)."""
    conv = _OPENCC.get("t2s")
    if conv is None:
        try:
            import opencc
        except ImportError:
            raise ConfigError(
                "normalize.t2s: needs the OpenCC library; install it with `pip install lmlab[zh]` "
                "(or `pip install opencc`)"
            ) from None
        conv = _OPENCC["t2s"] = opencc.OpenCC("t2s")
    return conv.convert(text)  # type: ignore[attr-defined]


@dataclass
class NormalizeConfig:
    html: bool = True  # strip tags, decode entities (IMDB's <br />)
    nfkc: bool = True  # Unicode NFKC
    fullwidth: bool = True  # full-width ASCII → ASCII (implied by nfkc; kept for nfkc=false)
    zero_width: bool = True  # remove invisible zero-width characters
    keep_joiners: bool = True  # keep ZWJ/ZWNJ (emoji sequences, Persian)
    whitespace: bool = True  # control characters, space runs, CRLF, blank-line runs
    lowercase: bool = False
    t2s: bool = False  # Traditional → Simplified Chinese (OpenCC)


class Normalizer:
    """The configured chain of steps, as one callable ``str -> str``."""

    def __init__(self, config: NormalizeConfig | None = None):
        cfg = config or NormalizeConfig()
        steps: list[Callable[[str], str]] = []
        if cfg.html:
            steps.append(strip_html)
        if cfg.nfkc:
            steps.append(nfkc)
        if cfg.fullwidth and not cfg.nfkc:  # NFKC already maps full-width forms
            steps.append(fullwidth_to_halfwidth)
        if cfg.zero_width:
            steps.append(lambda t: remove_zero_width(t, cfg.keep_joiners))
        if cfg.whitespace:
            steps.append(normalize_whitespace)
        if cfg.lowercase:
            steps.append(lowercase)
        if cfg.t2s:
            traditional_to_simplified("")  # fail early if OpenCC is missing
            steps.append(traditional_to_simplified)
        self.steps = steps

    def __call__(self, text: str) -> str:
        for step in self.steps:
            text = step(text)
        return text

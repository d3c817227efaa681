"""The models a server may use: an allow-list built once, at startup, from the command line.

A request names a model by its public name — the directory's base name, or ``NAME`` when the
argument is given as ``NAME=DIR`` — and the name is only ever looked up in this dictionary; it
is never joined to a path, so ``../x``, ``/etc/passwd`` or ``%2e%2e`` are simply unknown names
(404). Every model is loaded (and its manifest hashes verified) before the server accepts a
connection, so a broken directory fails the start, not a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.errors import ConfigError
from lmlab.model.linear import PackedWeights

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Words a served tokenizer caches (`Tokenizer.limit_word_cache`): requests' text is any text, so the
# cache fills early with whatever comes first; 1,000 words of up to 256 characters stay under ~8 MiB.
WORD_CACHE = 1000


@dataclass
class ModelEntry:
    name: str
    path: Path
    model: Any  # Transformer, eval mode
    tokenizer: Any
    chat_template: Any = None  # lmlab.generate.chat.ChatTemplate, read with the model at startup
    # Weights packed once for all requests (a served model's weights never change): one more copy in memory;
    # products of many rows padded to a few row counts, so that the kernels built for them stay few.
    pack: PackedWeights = field(default_factory=lambda: PackedWeights(bucket_rows=True))

    @property
    def can_generate(self) -> bool:
        cfg = self.model.config
        return (cfg.arch, cfg.head) in {("decoder", "clm"), ("encoder-decoder", "seq2seq")}

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    def card(self) -> dict[str, Any]:
        cfg = self.model.config
        return {"id": self.name, "object": "model", "created": 0, "owned_by": "lmlab",
                "arch": cfg.arch, "head": cfg.head, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                "max_seq_len": cfg.max_seq_len, "can_generate": self.can_generate}


def parse_model_args(args: list[str]) -> list[tuple[str, Path]]:
    """``DIR`` or ``NAME=DIR`` → [(name, path)]; names must be unique and plain."""
    out: list[tuple[str, Path]] = []
    for a in args:
        name, sep, rest = a.partition("=")
        if sep and "/" not in name and name:
            path = Path(rest)
        else:
            name, path = Path(a).resolve().name, Path(a)
        if not NAME.match(name):
            raise ConfigError(f"model name {name!r} (from {a!r}): use letters, digits, '.', '_' and '-' "
                              "(pass NAME=DIR to choose one)")
        if any(n == name for n, _ in out):
            raise ConfigError(f"two models are named {name!r}; pass NAME=DIR to tell them apart")
        if not path.is_dir():
            raise ConfigError(f"{path}: not a model directory")
        out.append((name, path))
    if not out:
        raise ConfigError("give at least one MODEL_DIR")
    return out


class Registry:
    def __init__(self, entries: list[ModelEntry]):
        self.entries = {e.name: e for e in entries}

    @classmethod
    def load(cls, args: list[str], device: str = "cpu", dtype: str = "float32") -> "Registry":
        """dtype: the weights' ("bfloat16" halves the bytes each decode step reads)."""
        from lmlab.generate import load_for_generation
        from lmlab.generate.chat import load_chat_template

        entries = []
        for name, path in parse_model_args(args):
            model, tok = load_for_generation(path, device=device, dtype=dtype)
            tok.limit_word_cache(WORD_CACHE)
            # from the tokenizer's own directory: `path` may be a run directory (its model/ is served)
            entries.append(ModelEntry(name, path, model.eval(), tok, load_chat_template(tok.directory)))
        return cls(entries)

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name) if isinstance(name, str) else None

    def names(self) -> list[str]:
        return list(self.entries)

"""`GenerationConfig`: every knob of one generation request, validated when built.

A server passes user input straight into this dataclass (``GenerationConfig(**params)`` or
`GenerationConfig.from_dict`), so every field is checked for type (a bool is not an int, a
string is not a number), finiteness (NaN and ±inf are refused) and range, and the error names
the field. The semantics follow Hugging Face's ``generate`` where it has the same knob:

* ``temperature`` 0 means greedy decoding (argmax, deterministic); otherwise logits are divided
  by it before sampling. ``top_k`` 0 and ``top_p`` 1.0 switch those filters off.
* ``repetition_penalty`` (Keskar et al. 2019, CTRL): the logit of every token already in the
  prompt or the generated text is divided by the penalty when positive, multiplied when
  negative; 1.0 is off.
* ``no_repeat_ngram_size`` n > 0: a token that would complete an n-gram already present in the
  row (prompt included for a decoder; the decoder's own tokens for an encoder–decoder) is
  forbidden, as transformers' ``no_repeat_ngram_size`` — the usual cure for a small
  summariser's loops ("to help #Person2# to help #Person2#").
* ``num_beams`` > 1 selects beam search (deterministic: sampling knobs must stay off) with
  ``length_penalty`` and ``early_stopping`` exactly
  as ``transformers`` (final score = sum of log-probabilities / generated_length^length_penalty).
* ``stop`` strings end the text right before their first occurrence, even when a stop string
  spans several tokens; ``stop_token_ids`` (default: the tokenizer's end-of-sequence token) end
  generation without being part of the text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from lmlab.config import check, from_dict
from lmlab.errors import ConfigError

MAX_STOP_STRINGS = 16


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    try:
        return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


@dataclass
class GenerationConfig:
    max_new_tokens: int = 64  # tokens generated at most (the prompt is not counted)
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # nucleus: keep the smallest set of tokens with mass ≥ top_p; 1.0 = off
    repetition_penalty: float = 1.0  # CTRL penalty on tokens already seen; 1.0 = off
    no_repeat_ngram_size: int = 0  # forbid repeating any n-gram of this size; 0 = off
    seed: int | None = None  # seeds this request's own torch.Generator; None = fresh entropy
    stop: list[str] | str = field(default_factory=list)  # stop strings (cut before, not included)
    stop_token_ids: list[int] | None = None  # None = the tokenizer's eos (if it has one)
    num_beams: int = 1  # > 1: beam search (no streaming)
    length_penalty: float = 1.0  # beam search: score / length^length_penalty
    early_stopping: bool | Literal["never"] = False  # beam search stopping rule (as transformers)
    skip_special_tokens: bool = True  # leave special tokens out of the text

    def __post_init__(self) -> None:
        check(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens",
              f"must be an integer ≥ 1, got {self.max_new_tokens!r}")
        check(_is_number(self.temperature) and self.temperature >= 0, "temperature",
              f"must be a finite number ≥ 0 (0 = greedy), got {self.temperature!r}")
        check(_is_int(self.top_k) and self.top_k >= 0, "top_k", f"must be an integer ≥ 0 (0 = off), got {self.top_k!r}")
        check(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p",
              f"must be a number in (0, 1], got {self.top_p!r}")
        check(_is_number(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty",
              f"must be a finite number > 0 (1.0 = off), got {self.repetition_penalty!r}")
        check(_is_int(self.no_repeat_ngram_size) and self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size",
              f"must be an integer ≥ 0 (0 = off), got {self.no_repeat_ngram_size!r}")
        check(self.seed is None or (_is_int(self.seed) and 0 <= self.seed < 2**63), "seed",
              f"must be an integer in [0, 2^63) or null, got {self.seed!r}")
        if isinstance(self.stop, str):  # OpenAI accepts a single string
            self.stop = [self.stop]
        check(isinstance(self.stop, (list, tuple)) and all(isinstance(s, str) and s for s in self.stop),
              "stop", f"must be a list of non-empty strings, got {self.stop!r}")
        check(len(self.stop) <= MAX_STOP_STRINGS, "stop",
              f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}")
        self.stop = list(self.stop)
        if self.stop_token_ids is not None:
            check(isinstance(self.stop_token_ids, (list, tuple))
                  and all(_is_int(i) and i >= 0 for i in self.stop_token_ids),
                  "stop_token_ids", f"must be a list of token ids ≥ 0, got {self.stop_token_ids!r}")
            self.stop_token_ids = list(self.stop_token_ids)
        check(_is_int(self.num_beams) and 1 <= self.num_beams <= 64, "num_beams",
              f"must be an integer in [1, 64], got {self.num_beams!r}")
        check(_is_number(self.length_penalty), "length_penalty",
              f"must be a finite number, got {self.length_penalty!r}")
        check(self.early_stopping is True or self.early_stopping is False or self.early_stopping == "never",
              "early_stopping",
              f"must be true, false or \"never\", got {self.early_stopping!r}")
        check(isinstance(self.skip_special_tokens, bool), "skip_special_tokens",
              f"must be true or false, got {self.skip_special_tokens!r}")
        if self.num_beams > 1:
            check(self.temperature in (0, 1) and self.top_k == 0 and self.top_p == 1.0, "num_beams",
                  "beam search is deterministic: leave temperature (0 or 1), top_k and top_p at their defaults")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "GenerationConfig":
        """From JSON-like input; unknown keys are refused by name."""
        return from_dict(cls, data)

    def replace(self, **changes: Any) -> "GenerationConfig":
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown generation parameter {', '.join(unknown)}")
        return GenerationConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

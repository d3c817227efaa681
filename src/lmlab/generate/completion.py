"""A completion of a text prompt, whatever produced it (sampling, streaming or beam search): the
prompt's ids (`encode_prompt`), the tokens that end it (`stop_ids`) and the result (`Completion`)."""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.errors import ConfigError
from lmlab.generate.config import GenerationConfig


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # generated ids; a final stop token is included, as in transformers
    finish_reason: str  # "stop": stop token or stop string; "length": max_new_tokens or context full
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


def encode_prompt(model, tokenizer, prompt: str, add_special_tokens: bool | None = None) -> list[int]:
    """Prompt ids: raw ids for a decoder (as pretraining saw them), with the tokenizer's template
    for an encoder–decoder source; an empty decoder prompt starts from the document separator."""
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt: must be a string, got {type(prompt).__name__}")
    seq2seq = model.config.arch == "encoder-decoder"
    special = seq2seq if add_special_tokens is None else add_special_tokens
    ids = tokenizer.encode(prompt, add_special_tokens=special)
    if not ids and not seq2seq:
        sep = tokenizer.document_separator_id
        if sep is None:
            raise ConfigError("prompt: is empty and the tokenizer has no eos/sep token to start from")
        ids = [sep]
    return ids


def stop_ids(tokenizer, config: GenerationConfig) -> list[int]:
    """The tokens that end a completion: ``config.stop_token_ids``, else the tokenizer's eos (if any)."""
    if config.stop_token_ids is not None:
        return config.stop_token_ids
    return [tokenizer.eos_id] if tokenizer.eos_id is not None else []

"""Text in, text out: `generate`, `stream` and `stream_batch` — what the CLI and a server call.

    from lmlab.generate import load_for_generation, generate, stream, GenerationConfig
    model, tok = load_for_generation("out/model")
    c = generate(model, tok, "Once upon a time", GenerationConfig(max_new_tokens=50, seed=1))
    c.text, c.finish_reason            # "...", "stop" | "length"
    s = stream(model, tok, "你好", max_new_tokens=20, temperature=0.8)
    for piece in s: print(piece, end="")   # whole UTF-8 characters only
    s.finish_reason                     # set once the stream is exhausted
    s.close()                           # cancel: no further decoding step runs

`stream_batch` runs several prompts in one batch (left padding, one KV cache) and yields
`Delta(index, text, finish_reason)` events; `BatchStream.cancel(i)` drops one row (a client
that went away: no further event for it, its completion stays None) while the others
continue. A batch is formed when it starts; requests cannot join a running batch (no
continuous batching). Text pieces come from the tokenizer's streaming decoder (never half a
character), then pass through `StopStrings` (cut exactly before a stop string); stop tokens
and, by default, special tokens are not part of the text. A completion cut by
``max_new_tokens`` inside a multi-byte character ends in U+FFFD, exactly as
``tokenizer.decode`` (and transformers) would give it.

Errors a user can cause (bad parameters, an empty or too long prompt, ids outside the
vocabulary) raise `ConfigError` naming the field before any computation; a server maps them
to 4xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from lmlab.errors import ArtifactError, ConfigError
from lmlab.generate.beam import beam_search_text
from lmlab.generate.completion import Completion, encode_prompt, stop_ids
from lmlab.generate.config import GenerationConfig
from lmlab.generate.decode import DecodeLoop
from lmlab.generate.stop import StopStrings


@dataclass
class Delta:
    index: int  # which prompt of the batch
    text: str  # new text (may be "" on a row's last event)
    finish_reason: str | None = None  # set on the row's last event


def load_for_generation(model_dir: str | Path, device: str = "cpu", dtype: Any = None):
    """(model, tokenizer) from an lmlab model directory that holds a ``tokenizer/`` subdirectory
    (or from a run directory: its ``model/``).

    The model directory's manifest covers the tokenizer files (they are hash-checked with the
    weights), so the copy inside it carries no manifest of its own. ``dtype`` ("bfloat16", a
    torch dtype) casts the weights (the KV cache stays float32 on CPU: see `KVCache`); "auto" is
    the machine's choice (`lmlab.machine`: bfloat16 where the CPU has native bf16, else float32).
    """
    import torch

    from lmlab.model import load_model
    from lmlab.model.pretrained import require_transformer, resolve_model_dir
    from lmlab.tokenizer.tokenizer import Tokenizer

    model_dir = resolve_model_dir(model_dir)
    tok_dir = model_dir / "tokenizer"
    model = load_model(model_dir, device=device)  # verifies every hash in the manifest
    require_transformer(model.config, str(model_dir), "generation")
    if not tok_dir.is_dir():
        raise ArtifactError(f"{model_dir}: has no tokenizer/ to turn text into ids; `lmlab pretrain` and `lmlab "
                            "finetune` write one, `lmlab hf import` copies the Hugging Face directory's tokenizer "
                            "files (import it again from a directory that has tokenizer.json)")
    tokenizer = Tokenizer.load(tok_dir, verify_hashes=False)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ArtifactError(f"{model_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                            f"{model.config.vocab_size}; they were not trained together")
    if dtype == "auto":
        from lmlab import machine

        dtype = machine.detect().generation_dtype(device)
    if dtype is not None:
        model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model, tokenizer


def _config(config: GenerationConfig | None, overrides: dict[str, Any]) -> GenerationConfig:
    config = config or GenerationConfig()
    return config.replace(**overrides) if overrides else config


class BatchStream:
    """Iterate `Delta` events for a batch of prompts; see the module docstring."""

    def __init__(self, model, tokenizer, prompts: Sequence[str], configs: GenerationConfig | Sequence[GenerationConfig],
                 add_special_tokens: bool | None = None, decoder_start_id: int | None = None, pack=None):
        configs = [configs] * len(prompts) if isinstance(configs, GenerationConfig) else list(configs)
        for c in configs:
            if c.num_beams > 1:
                raise ConfigError("num_beams: beam search cannot stream (the best beam is known only at the end); "
                                  "use generate()")
        self.tokenizer = tokenizer
        self.prompt_ids = [encode_prompt(model, tokenizer, p, add_special_tokens) for p in prompts]
        stops = [stop_ids(tokenizer, c) for c in configs]
        self.loop = DecodeLoop(model, self.prompt_ids, configs, stops, decoder_start_id=decoder_start_id,
                               pad_id=tokenizer.pad_id, vocab_limit=tokenizer.vocab_size, pack=pack)
        self.stop_ids = [set(s) for s in stops]
        specials = {i for i in tokenizer.special_ids.values() if i is not None}
        self.skip = [specials if c.skip_special_tokens else set() for c in configs]
        self.decoders = [tokenizer.stream_decoder() for _ in prompts]
        self.stops = [StopStrings(c.stop) for c in configs]
        self.texts = [[] for _ in prompts]
        self.completions: list[Completion | None] = [None] * len(prompts)
        self._events = self._run()

    def __iter__(self) -> Iterator[Delta]:
        return self._events

    def __next__(self) -> Delta:
        return next(self._events)

    def cancel(self, index: int) -> None:
        """Stop generating for row `index`; no more events are produced for it."""
        self.loop.finish(index, "cancelled")

    def close(self) -> None:
        """Stop everything now: the decode loop is closed and runs no further step."""
        self._events.close()

    @property
    def steps(self) -> int:
        return self.loop.steps

    def _piece(self, i: int, token: int, reason: str | None) -> tuple[str, str | None]:
        if reason == "stop" and token in self.stop_ids[i]:
            piece = ""  # a stop token ends the text without being part of it
        elif token in self.skip[i]:
            piece = ""
        else:
            piece = self.decoders[i].push(token)
        stops = self.stops[i]
        out = stops.push(piece)
        if stops.stopped:
            return out, "stop"
        if reason is not None:
            out += stops.push(self.decoders[i].flush())
            if stops.stopped:
                return out, "stop"
            out += stops.flush()
        return out, reason

    def _run(self) -> Iterator[Delta]:
        loop = iter(self.loop)
        try:
            for events in loop:
                for ev in events:
                    text, reason = self._piece(ev.index, ev.token, ev.finish_reason)
                    if reason is not None and ev.finish_reason is None:
                        self.loop.finish(ev.index, reason)  # a stop string ended the row
                    self.texts[ev.index].append(text)
                    if reason is not None:
                        self.completions[ev.index] = Completion(
                            "".join(self.texts[ev.index]), list(self.loop.generated[ev.index]), reason,
                            len(self.prompt_ids[ev.index]))
                    if text or reason is not None:
                        yield Delta(ev.index, text, reason)
        finally:
            loop.close()  # a consumer that stops listening stops the decoding


class TextStream:
    """One prompt's text pieces (str); `finish_reason` and `completion` once exhausted."""

    def __init__(self, batch: BatchStream):
        self.batch = batch
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        for delta in self.batch:
            if delta.finish_reason is not None:
                self.finish_reason = delta.finish_reason
            if delta.text:
                yield delta.text

    def close(self) -> None:
        self.batch.close()

    @property
    def completion(self) -> Completion | None:
        return self.batch.completions[0]

    @property
    def steps(self) -> int:
        return self.batch.steps


def stream(model, tokenizer, prompt: str, config: GenerationConfig | None = None, **overrides: Any) -> TextStream:
    """Stream one completion of `prompt` as text pieces (keyword overrides: GenerationConfig fields)."""
    return TextStream(BatchStream(model, tokenizer, [prompt], _config(config, overrides)))


def stream_batch(model, tokenizer, prompts: Sequence[str],
                 configs: GenerationConfig | Sequence[GenerationConfig] | None = None, **kwargs: Any) -> BatchStream:
    """Stream completions of several prompts in one batch; events are `Delta`s."""
    return BatchStream(model, tokenizer, list(prompts), configs or GenerationConfig(), **kwargs)


def generate(model, tokenizer, prompt: str | Sequence[str], config: GenerationConfig | None = None,
             **overrides: Any) -> Completion | list[Completion]:
    """Complete one prompt (→ Completion) or a batch (→ list), sampling or beam search."""
    config = _config(config, overrides)
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if config.num_beams > 1:
        out = beam_search_text(model, tokenizer, prompts, config)
    else:
        batch = BatchStream(model, tokenizer, prompts, config)
        for _ in batch:
            pass
        out = list(batch.completions)
    return out[0] if isinstance(prompt, str) else out

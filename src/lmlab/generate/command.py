"""`lmlab generate MODEL_DIR --prompt TEXT`: sample from a model directory, streamed to the terminal.

    lmlab generate out/model --prompt "To be" --max-new-tokens 200 --temperature 0.8 --top-k 200 --seed 1
    lmlab generate out/mt --prompt "Hello world" --num-beams 4 --length-penalty 1.0   # encoder–decoder

The prompt is echoed (decoder models), then the completion streams in whole UTF-8 characters;
a summary line (finish reason, tokens, tokens/s) goes to stderr so that stdout holds only text.
"""

from __future__ import annotations

import sys
import time

from lmlab.generate.config import GenerationConfig
from lmlab.generate.stream import generate, load_for_generation, stream


def generate_command(model_dir: str, prompt: str, max_new_tokens: int = 64, temperature: float = 1.0,
                     top_k: int = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                     no_repeat_ngram_size: int = 0, seed: int | None = None, stop: list[str] | None = None,
                     num_beams: int = 1, length_penalty: float = 1.0, dtype: str = "float32",
                     echo: bool = True) -> None:
    # beam search is deterministic: the CLI's sampling temperature does not apply to it
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0 if num_beams > 1 else temperature,
                              top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                              no_repeat_ngram_size=no_repeat_ngram_size, seed=seed,
                              stop=list(stop or []), num_beams=num_beams, length_penalty=length_penalty)
    model, tokenizer = load_for_generation(model_dir, dtype=dtype)
    out = sys.stdout
    if echo and model.config.arch == "decoder":
        out.write(prompt)
        out.flush()
    start = time.perf_counter()
    if num_beams > 1:
        c = generate(model, tokenizer, prompt, config)
        out.write(c.text)
        reason, n = c.finish_reason, c.completion_tokens
    else:
        s = stream(model, tokenizer, prompt, config)
        try:
            for piece in s:
                out.write(piece)
                out.flush()
        finally:
            s.close()
        reason, n = s.finish_reason, s.completion.completion_tokens if s.completion else 0
    seconds = time.perf_counter() - start
    out.write("\n")
    out.flush()
    print(f"[finish_reason={reason} tokens={n} {n / max(seconds, 1e-9):.1f} tokens/s]", file=sys.stderr)

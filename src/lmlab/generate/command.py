"""`lmlab generate MODEL_DIR --prompt TEXT`: sample from a model directory, streamed to the terminal.

    lmlab generate out/model --prompt "To be" --max-new-tokens 200 --temperature 0.8 --top-k 200 --seed 1
    lmlab generate out/mt --prompt "Hello world" --num-beams 4 --length-penalty 1.0   # encoder–decoder
    lmlab generate out/qwen --chat --prompt "Name three rivers." --temperature 0
    lmlab generate out/qwen --messages chat.json              # [{"role": "system", "content": ...}, ...]

The prompt is echoed (decoder models), then the completion streams in whole UTF-8 characters;
a summary line (finish reason, tokens, tokens/s) goes to stderr so that stdout holds only text.
With --chat (or --messages) the conversation is rendered by `lmlab.generate.chat` and only
the reply is printed; stderr says whether the model's own chat template or the plain
System/User/Assistant fallback was used.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lmlab.errors import ConfigError, DataError
from lmlab.generate.chat import render_chat
from lmlab.generate.config import GenerationConfig
from lmlab.generate.stream import generate, load_for_generation, stream


def generate_command(model_dir: str, prompt: str | None = None, max_new_tokens: int | None = None,
                     temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                     repetition_penalty: float | None = None, no_repeat_ngram_size: int | None = None,
                     seed: int | None = None, stop: list[str] | None = None, num_beams: int | None = None,
                     length_penalty: float | None = None, dtype: str = "float32",
                     echo: bool = True, chat: bool = False, messages: str | None = None) -> None:
    """CLI: ``lmlab generate MODEL_DIR --prompt TEXT``; a knob left None keeps `GenerationConfig`'s default."""
    config = flag_config(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                         seed=seed, stop=list(stop or []), num_beams=num_beams, length_penalty=length_penalty)
    num_beams = config.num_beams
    chat = chat or messages is not None
    if prompt is None and not (chat and messages):
        raise ConfigError("--prompt: give the text to continue (or --chat --messages FILE for a conversation)")
    model, tokenizer = load_for_generation(model_dir, dtype=dtype)
    if chat:
        if model.config.arch != "decoder":
            raise ConfigError(f"--chat: {model_dir} is an encoder–decoder; chat prompts are for decoder models")
        conversation = read_messages(messages) if messages else []
        if prompt is not None:
            conversation.append({"role": "user", "content": prompt})
        rendered = render_chat(tokenizer.directory, conversation)  # model_dir may be a run directory
        print("[chat: the model's chat template]" if rendered.template == "model" else
              "[chat: the model has no chat template; plain System/User/Assistant prompt]", file=sys.stderr)
        prompt, echo = rendered.text, False
        config = config.replace(stop=config.stop + rendered.stop)
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


def flag_config(**flags) -> GenerationConfig:
    """The `GenerationConfig` of the command's flags: those left None keep the dataclass's defaults."""
    given = {k: v for k, v in flags.items() if v is not None}
    if given.get("num_beams", 1) > 1:  # beam search is deterministic: the sampling temperature does not apply
        given["temperature"] = 0.0
    return GenerationConfig(**given)


def read_messages(path: str) -> list[dict]:
    """A conversation file: a JSON list of {role, content}, or an object with "messages" (OpenAI's body)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"--messages {path}: cannot be read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"--messages {path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"--messages {path}: not UTF-8 text") from None
    if isinstance(data, dict):
        data = data.get("messages")
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise DataError(f"--messages {path}: expected a list of {{\"role\": ..., \"content\": ...}} objects "
                        "(or an object whose \"messages\" is one)")
    return data

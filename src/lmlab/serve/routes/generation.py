"""What completions and chat share: the sampling config from a request, prompt checks,
admission of rows to the model thread, and waiting for them (collected into one answer, or
streamed as server-sent events).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from lmlab.errors import ConfigError
from lmlab.serve.batcher import Row, ShuttingDown
from lmlab.serve.errors import ApiError, log
from lmlab.serve.schema import SamplingParams, error_body
from lmlab.serve.state import ServerState

# Sampling runs in float32: logits / temperature and logits · repetition_penalty must stay finite and
# non-zero there (1e-300 is 0 in float32 and 1e39 is inf; either turns the softmax into NaN). Outside
# these ranges a request is refused, never clamped; OpenAI's own temperature range is [0, 2].
SAMPLING_RANGES = {"temperature": (0.01, 100.0), "repetition_penalty": (0.01, 100.0)}
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32; top_p below it is 0 there


def check_sampling(p: SamplingParams) -> None:
    """400 naming the field for sampling values that float32 arithmetic cannot carry."""
    for name, (lo, hi) in SAMPLING_RANGES.items():
        v = getattr(p, name)
        if name == "temperature" and v == 0:
            continue  # greedy
        if not lo <= v <= hi:
            greedy = "0 (greedy) or " if name == "temperature" else ""
            raise ApiError(400, f"{name}: {v!r} is outside what sampling in float32 can use; give {greedy}"
                           f"a value in [{lo:g}, {hi:g}]", param=name)
    if 0 < p.top_p < FLOAT32_TINY:
        raise ApiError(400, f"top_p: {p.top_p!r} is 0 in float32; give a value in [1e-30, 1]", param="top_p")


def generation_config(state: ServerState, p: SamplingParams, stop_extra: list[str] | None = None,
                      max_tokens: int | None = None):
    from lmlab.generate import GenerationConfig

    check_sampling(p)
    n = 16 if max_tokens is None else max_tokens
    if n > state.config.max_tokens:
        raise ApiError(400, f"max_tokens: {n} is over this server's cap of {state.config.max_tokens}",
                       param="max_tokens")
    stop = [p.stop] if isinstance(p.stop, str) else list(p.stop or [])
    try:
        return GenerationConfig(max_new_tokens=n, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                repetition_penalty=p.repetition_penalty, seed=p.seed, stop=stop + (stop_extra or []))
    except ConfigError as e:
        raise ApiError(400, str(e), param=str(e).split(":", 1)[0]) from None


def check_prompt(state: ServerState, entry, prompt: str) -> int:
    """The prompt's token count; 400 when it is over max_input_tokens or the model's context."""
    seq2seq = entry.model.config.arch == "encoder-decoder"
    n = len(entry.tokenizer.encode(prompt, add_special_tokens=seq2seq))
    # a decoder needs room for one new token after the prompt; an encoder reads at most its context
    limit = min(state.config.max_input_tokens, entry.max_seq_len if seq2seq else entry.max_seq_len - 1)
    if n > limit:
        raise ApiError(400, f"prompt: {n} tokens, over the limit of {limit} (max_input_tokens and the model's "
                       f"context {entry.max_seq_len})", param="prompt", code="context_length_exceeded")
    return n


async def start_rows(state: ServerState, request: Request, entry, prompts: list[str], gcfg) -> list[Row]:
    config = state.config
    if len(prompts) > config.max_prompts or not prompts:
        raise ApiError(400, f"prompt: give 1 to {config.max_prompts} prompts", param="prompt")
    for p in prompts:
        check_prompt(state, entry, p)
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + config.request_timeout_s
    # every row gets a seed (fresh entropy when the request gave none), so that a row decoded again
    # after its batch failed gives the text it had already sent (`Batcher._run_batch`)
    rows = [Row(entry, p, gcfg if gcfg.seed is not None else gcfg.replace(seed=secrets.randbits(63)), deadline, loop)
            for p in prompts]
    if not state.batcher.admit(rows):
        raise state.busy()
    if config.log_prompts:
        log.info("prompts for %s: %r", entry.name, prompts)
    return rows


async def collect(state: ServerState, request: Request, rows: list[Row]) -> list[tuple[str, str]]:
    """Wait for every row; (text, finish_reason) each. Cancels all if the client leaves."""
    out: list[list[Any]] = [["", None] for _ in rows]
    checked = time.monotonic()
    try:
        for i, row in enumerate(rows):
            while out[i][1] is None:
                if time.monotonic() - checked > 0.2:  # is the client still there?
                    checked = time.monotonic()
                    if await request.is_disconnected():  # 499 (nginx's "client closed request"): nobody reads it
                        raise ApiError(499, "client closed the request", code="client_closed")
                try:
                    kind, *payload = await asyncio.wait_for(row.events.get(), 0.2)
                except asyncio.TimeoutError:
                    continue
                if kind == "error":  # logged by the batcher
                    raise row_error(payload[0])
                out[i][0] += payload[0]
                out[i][1] = payload[1]
    finally:
        for r in rows:
            r.cancel()  # no-op for finished rows
    if any(reason == "timeout" for _, reason in out):
        raise ApiError(504, f"request took longer than request_timeout_s={state.config.request_timeout_s}",
                       "timeout_error", code="timeout")
    return [tuple(o) for o in out]


def row_error(e: BaseException) -> ApiError:
    """The answer for a row that ended with an exception: 400 for input the generator refused
    (`ConfigError` names the field), 503 when the server stopped first, else 500."""
    if isinstance(e, ConfigError):
        return ApiError(400, str(e), param=str(e).split(":", 1)[0] if ":" in str(e) else None)
    if isinstance(e, ShuttingDown):
        return ApiError(503, "server is shutting down", "server_error", code="unavailable")
    return ApiError(500, f"generation failed ({type(e).__name__})", "server_error")


def usage(rows: list[Row], prompt_tokens: int) -> dict[str, int]:
    done = sum(r.completion.completion_tokens for r in rows if r.completion is not None)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}


def sse(rows: list[Row], chunk, final_usage) -> StreamingResponse:
    """Server-sent events: ``chunk(i, text, reason)`` per delta (``first=True`` once, before any),
    then ``final_usage()`` when not None, then ``data: [DONE]``."""
    async def events():
        yield from_chunk(chunk(None, None, None, first=True))
        left = set(range(len(rows)))
        queues = {i: asyncio.ensure_future(rows[i].events.get()) for i in left}
        try:
            while left:
                done, _ = await asyncio.wait([queues[i] for i in left], return_when=asyncio.FIRST_COMPLETED)
                for i in sorted(left):
                    if queues[i] not in done:
                        continue
                    kind, *payload = queues[i].result()
                    if kind == "error":
                        e = row_error(payload[0])
                        yield from_chunk(error_body(e.message, e.kind, e.param, e.code))
                        left.clear()
                        break
                    text, reason = payload
                    if text or reason:
                        yield from_chunk(chunk(i, text, reason))
                    if reason is not None:
                        left.discard(i)
                    else:
                        queues[i] = asyncio.ensure_future(rows[i].events.get())
            u = final_usage()
            if u is not None:
                yield from_chunk(u)
            yield b"data: [DONE]\n\n"
        finally:
            for f in queues.values():
                f.cancel()
            for r in rows:
                r.cancel()

    return Streaming(events(), rows, media_type="text/event-stream",
                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class Streaming(StreamingResponse):
    """A stream whose rows are cancelled however it ends (done, error, client gone)."""

    def __init__(self, content, rows: list[Row], **kw):
        super().__init__(content, **kw)
        self.rows = rows

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            for r in self.rows:
                r.cancel()


def from_chunk(obj: Any) -> bytes:
    if obj is None:
        return b""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

"""``POST /v1/completions``: OpenAI Completions, one choice per prompt, streamed or not."""

from __future__ import annotations

import time
import uuid

from fastapi import Request

from lmlab.serve.routes.generation import collect, generation_config, sse, start_rows, usage
from lmlab.serve.schema import CompletionRequest
from lmlab.serve.state import ServerState


async def completions(state: ServerState, request: Request):
    p = await state.read(request, CompletionRequest)
    entry = state.entry(p.model, generate=True)
    gcfg = generation_config(state, p, max_tokens=p.max_tokens)
    prompts = p.prompts()
    rows = await start_rows(state, request, entry, prompts, gcfg)
    prompt_tokens = sum(len(entry.tokenizer.encode(x)) for x in prompts)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": entry.name}
    if p.stream:
        include = bool(p.stream_options and p.stream_options.include_usage)

        def chunk(i, text, reason, first=False):
            if first:
                return None
            return {**head, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}]}

        return sse(rows, chunk, lambda: {**head, "choices": [], "usage": usage(rows, prompt_tokens)}
                   if include else None)
    out = await collect(state, request, rows)
    return {**head, "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                                for i, (t, r) in enumerate(out)], "usage": usage(rows, prompt_tokens)}


ROUTES = [("POST", "/v1/completions", completions)]

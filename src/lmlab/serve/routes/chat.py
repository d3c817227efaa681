"""``POST /v1/chat/completions``: OpenAI Chat Completions over a text model.

The conversation becomes one prompt in `chat_prompt_for`, the only place that decides how
messages are rendered: the model's own chat template (`lmlab.generate.chat`), or the plain
System/User/Assistant convention with ``"\\nUser:"`` as an extra stop string. The response's
extra field ``lmlab_chat_template`` ("model" | "plain") says which.
"""

from __future__ import annotations

import time
import uuid

from fastapi import Request

from lmlab.errors import LmlabError
from lmlab.generate.chat import Chat
from lmlab.serve.errors import ApiError
from lmlab.serve.registry import ModelEntry
from lmlab.serve.routes.generation import collect, generation_config, sse, start_rows, usage
from lmlab.serve.schema import ChatRequest, Message
from lmlab.serve.state import ServerState


def chat_prompt_for(entry: ModelEntry, messages: list[Message]) -> Chat:
    """The prompt that `entry` continues for this conversation, with its stop strings."""
    try:
        return entry.chat_template.render([m.model_dump(exclude_none=True) for m in messages])
    except LmlabError as e:
        raise ApiError(400, str(e), param="messages") from None


async def chat(state: ServerState, request: Request):
    p = await state.read(request, ChatRequest)
    entry = state.entry(p.model, generate=True)
    conv = chat_prompt_for(entry, p.messages)
    gcfg = generation_config(state, p, conv.stop, p.max_completion_tokens if p.max_completion_tokens is not None
                             else p.max_tokens)
    prompt = conv.text
    rows = await start_rows(state, request, entry, [prompt], gcfg)
    prompt_tokens = len(entry.tokenizer.encode(prompt))
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    head = {"id": cid, "created": created, "model": entry.name, "lmlab_chat_template": conv.template}
    if p.stream:
        include = bool(p.stream_options and p.stream_options.include_usage)

        def chunk(i, text, reason, first=False):
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            return {**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None if first else reason}]}

        return sse(rows, chunk, lambda: {**head, "object": "chat.completion.chunk", "choices": [],
                                         "usage": usage(rows, prompt_tokens)} if include else None)
    (text, reason), = await collect(state, request, rows)
    return {**head, "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text.strip()},
                         "finish_reason": reason}], "usage": usage(rows, prompt_tokens)}


ROUTES = [("POST", "/v1/chat/completions", chat)]

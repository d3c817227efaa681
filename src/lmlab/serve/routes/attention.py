"""``POST /v1/attention``: ``{"model", "text"}`` → the tokens and the weights [layer][head][T][S]
of one forward pass (`lmlab.viz.attention.attention_maps`) over the first `MAX_TOKENS` tokens,
run on the model thread under the request's limits (`ServerState.run`); the input is padded to a
bucket length, so that the shapes the model runs stay a bounded set."""

from __future__ import annotations

from fastapi import Request

from lmlab.errors import LmlabError
from lmlab.serve.errors import ApiError
from lmlab.serve.schema import AttentionRequest
from lmlab.serve.state import ServerState

MAX_TOKENS = 128  # a heatmap of more tokens than this is unreadable


async def attention(state: ServerState, request: Request):
    from lmlab.viz.attention import attention_maps

    p = await state.read(request, AttentionRequest)
    entry = state.entry(p.model)
    try:
        maps, = await state.run(request, [(lambda: attention_maps(
            entry.model, entry.tokenizer, p.text, max_tokens=min(MAX_TOKENS, state.config.max_input_tokens),
            bucket=True), 1)])
    except LmlabError as e:
        raise ApiError(400, str(e), param="text") from None
    return {"model": entry.name, **maps.to_json()}


ROUTES = [("POST", "/v1/attention", attention)]

"""Request and response bodies of the OpenAI-compatible API and lmlab's task endpoints.

Reference: the OpenAI API reference (Completions, Chat Completions, Models). Every field is
strictly typed (a string is not a number, a bool is not an int, NaN and ±inf are refused) and
unknown fields are refused by name, so bad input is a 400 that names the field, never a 500.
Ranges are checked by `GenerationConfig` (temperature ≥ 0, 0 < top_p ≤ 1, ...), by what
sampling in float32 can carry (temperature 0 or in [0.01, 100], repetition_penalty in
[0.01, 100], top_p not 0 in float32: `routes.generation.check_sampling`) and by the server's
limits (`max_tokens` cap, prompt tokens within the model's context).

Supported as in OpenAI: ``model``, ``prompt`` (a string or a list of strings), ``messages``,
``max_tokens`` (chat: also ``max_completion_tokens``), ``temperature``, ``top_p``, ``stop``,
``seed``, ``stream``, ``stream_options.include_usage``, ``n`` = 1, ``user`` (ignored).
Extensions: ``top_k`` and ``repetition_penalty`` (as in vLLM). Refused unless at their neutral
value: ``logprobs``, ``echo``, ``presence_penalty``, ``frequency_penalty``, ``best_of``, ``suffix``.

Chat: the messages are rendered by the model's own chat template (tokenizer/chat_template.jinja
or tokenizer_config.json, as transformers' ``apply_chat_template``; `lmlab.generate.chat`).
Models without one (lmlab's, pretrained on plain text) get plain lines — ``System: …`` /
``User: …`` / ``Assistant: …`` — followed by ``Assistant:``, with ``"\\nUser:"`` as a stop
string; the response's extra field ``lmlab_chat_template`` says which ("model" | "plain").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

# ints are bounded so that a 400-digit JSON integer is a 400 here, not an OverflowError later
Int = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
Float = Union[Int, Annotated[float, Field(strict=True, allow_inf_nan=False)]]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(Request):
    include_usage: StrictBool = False


class SamplingParams(Request):
    model: StrictStr
    max_tokens: Int | None = None
    temperature: Float = 1.0
    top_p: Float = 1.0
    top_k: Int = 0
    repetition_penalty: Float = 1.0
    stop: StrictStr | list[StrictStr] | None = None
    seed: Int | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: StrictStr | None = None
    presence_penalty: Literal[0] = 0
    frequency_penalty: Literal[0] = 0
    logprobs: None = None


class CompletionRequest(SamplingParams):
    prompt: StrictStr | list[StrictStr]
    echo: Literal[False] = False
    best_of: Literal[1] = 1
    suffix: None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class Message(Request):
    role: Literal["system", "user", "assistant"]
    content: StrictStr
    name: StrictStr | None = None


class ChatRequest(SamplingParams):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Int | None = None


# -- task endpoints ----------------------------------------------------------------------------

class TextTask(Request):
    model: StrictStr
    text: StrictStr | list[StrictStr]


class AnswerRequest(Request):
    model: StrictStr
    question: StrictStr
    context: StrictStr


class AttentionRequest(Request):
    model: StrictStr
    text: StrictStr


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}

"""Generation: sampling, beam search, batched incremental decoding, UTF-8-safe streaming.

Server-facing API (see `lmlab.generate.stream` for examples):

    load_for_generation(model_dir, device="cpu", dtype=None) -> (Transformer, Tokenizer)
    generate(model, tok, prompt | [prompts], config=None, **fields) -> Completion | [Completion]
    stream(model, tok, prompt, config=None, **fields) -> TextStream   (iterate str; .finish_reason; .close())
    stream_batch(model, tok, prompts, configs) -> BatchStream         (iterate Delta; .cancel(i); .close())
    Completion(text, token_ids, finish_reason "stop" | "length", prompt_tokens); .completion_tokens
    GenerationConfig(...)                                             (validated; from_dict for JSON)

Token level: `DecodeLoop` (sampling, batched, left-padded) and `beam_search`.
"""

from lmlab.generate.beam import Hypothesis, beam_search
from lmlab.generate.completion import Completion
from lmlab.generate.config import GenerationConfig
from lmlab.generate.decode import DecodeLoop, TokenEvent
from lmlab.generate.stream import BatchStream, Delta, TextStream, generate, load_for_generation, stream, stream_batch

__all__ = ["BatchStream", "Completion", "DecodeLoop", "Delta", "GenerationConfig", "Hypothesis", "TextStream",
           "TokenEvent", "beam_search", "generate", "load_for_generation", "stream", "stream_batch"]

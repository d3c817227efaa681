"""Text layer: streaming never splits a UTF-8 character, stop strings cut exactly (also across
tokens), stop tokens end the text, cancellation stops decoding."""

import random

import pytest
import torch
from torch import nn

from lmlab.generate import GenerationConfig, generate, stream, stream_batch
from lmlab.generate.stop import StopStrings
from lmlab.model import ModelOutput, preset

from .conftest import tiny

TEXT = "中文和 emoji 👨‍👩‍👧 mixed, 春天等待明亮的月光🙂 and STOP here 🎉"


class Scripted(nn.Module):
    """Puts all probability on a fixed script of tokens per row, whatever the input: the text
    layer is under test here, not the model. After the script it repeats `after`."""

    def __init__(self, scripts: list[list[int]], vocab_size: int, after: int):
        super().__init__()
        self.config = preset("gpt2-tiny", vocab_size=vocab_size, max_seq_len=512)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the loop a device and a dtype
        self.scripts, self.after, self.calls = scripts, after, 0

    def forward(self, ids, attention_mask=None, cache=None, position_ids=None, head_positions=None, **_):
        b, t = ids.shape
        logits = torch.full((b, t, self.config.vocab_size), -30.0)
        for i in range(b):
            s = self.scripts[i]
            logits[i, -1, s[self.calls] if self.calls < len(s) else self.after] = 30.0
        self.calls += 1
        cache.advance(t)
        return ModelOutput(hidden_states=ids, logits=logits if head_positions is None else logits[head_positions])


def scripted(tok, texts, after=None):
    return Scripted([tok.encode(x) for x in texts], tok.vocab_size, tok.eos_id if after is None else after)


def test_stream_pieces_are_whole_characters(bpe):
    ids = bpe.encode(TEXT)
    assert len(ids) > len(TEXT) // 2  # many characters span several byte-level tokens
    model = scripted(bpe, [TEXT])
    s = stream(model, bpe, "你好", max_new_tokens=200, temperature=0)
    pieces = list(s)
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)
    assert s.finish_reason == "stop"  # the script ends with eos, which is not in the text
    assert s.completion.token_ids == ids + [bpe.eos_id]
    assert len(pieces) < len(ids)  # tokens that ended inside a character produced no piece


def test_random_model_stream_concatenates_to_decode(bpe):
    model = tiny("gpt2", vocab_size=bpe.vocab_size)
    for seed in range(3):
        s = stream(model, bpe, "春天 🙂 spring", max_new_tokens=25, seed=seed, temperature=1.5)
        pieces = list(s)
        ids = s.completion.token_ids
        ids = ids[:-1] if s.finish_reason == "stop" else ids
        assert "".join(pieces) == bpe.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("stop", ["STOP", "月光🙂 an", "👩", "d, 春", "🎉"])
def test_stop_strings_cut_exactly_even_across_tokens(bpe, stop):
    model = scripted(bpe, [TEXT])
    c = generate(model, bpe, "x", max_new_tokens=200, temperature=0, stop=[stop, "never there"])
    assert c.text == TEXT[:TEXT.index(stop)] and c.finish_reason == "stop"
    ids = bpe.encode(TEXT)
    needed = next(k for k in range(1, len(ids) + 1) if stop in bpe.decode(ids[:k]))
    assert c.token_ids == ids[:needed]  # decoding stopped at the token that completed the stop string
    assert model.calls == needed


def test_stop_string_absent_and_max_tokens(bpe):
    model = scripted(bpe, [TEXT])
    c = generate(model, bpe, "x", max_new_tokens=7, temperature=0, stop=["zzz"])
    assert c.finish_reason == "length" and len(c.token_ids) == 7 and model.calls == 7
    # cut inside a character: the text is what decode gives (a final U+FFFD), as transformers does
    assert c.text == bpe.decode(bpe.encode(TEXT)[:7]) == "中文\ufffd"


def test_stop_strings_against_the_oracle_on_random_chunkings():
    rng = random.Random(0)
    alphabet = "ab月🙂 "
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
        cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
        expect = text[:min(cuts)] if cuts else text
        m, out, i = StopStrings(stops), [], 0
        while i < len(text):
            n = rng.randint(1, 4)
            out.append(m.push(text[i:i + n]))
            i += n
        out.append(m.flush())
        assert "".join(out) == expect and m.stopped == bool(cuts), (text, stops)


def test_closing_a_stream_stops_decoding(bpe):
    model = tiny("gpt2", vocab_size=bpe.vocab_size)
    s = stream(model, bpe, "hello", max_new_tokens=100, seed=0, stop_token_ids=[])
    it = iter(s)
    next(it)
    next(it)
    steps = s.steps
    s.close()
    assert list(it) == [] and s.steps == steps and steps < 10


def test_cancel_one_row_of_a_batch(bpe):
    model = scripted(bpe, [TEXT, TEXT], after=bpe.encode("a")[0])
    batch = stream_batch(model, bpe, ["x", "y"], GenerationConfig(max_new_tokens=30, temperature=0))
    got = {0: [], 1: []}
    for d in batch:
        got[d.index].append(d)
        if d.index == 1 and len(got[1]) == 2:
            batch.cancel(1)
    assert len(got[1]) == 2 and got[1][-1].finish_reason is None
    assert got[0][-1].finish_reason == "length" and batch.completions[1] is None
    assert "".join(d.text for d in got[0]) == batch.completions[0].text


def test_batched_text_equals_single(bpe):
    model = tiny("llama", vocab_size=bpe.vocab_size)
    prompts = ["我们喜欢", "The small robot remembers the river", "🙂"]
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.9, seed=4, stop=["the"])
    many = generate(model, bpe, prompts, cfg)
    for p, c in zip(prompts, many):
        one = generate(model, bpe, p, cfg)
        assert (one.text, one.token_ids, one.finish_reason) == (c.text, c.token_ids, c.finish_reason)


def test_model_vocabulary_padded_beyond_the_tokenizer_never_yields_unknown_ids(bpe):
    """A model with more output rows than tokenizer ids (e.g. padded to a multiple of 64)."""
    from lmlab.generate import GenerationConfig
    from lmlab.generate.stream import stream_batch

    from .conftest import tiny

    model = tiny("gpt2", vocab_size=bpe.vocab_size + 37)
    with torch.no_grad():  # make the padded rows the most likely ones
        model.embed.tokens.weight[bpe.vocab_size:] *= 50
    for seed in range(5):
        events = list(stream_batch(model, bpe, ["hello"], GenerationConfig(max_new_tokens=12, temperature=1.5,
                                                                           seed=seed)))
        assert events[-1].finish_reason in ("stop", "length")


def test_huge_integer_parameters_are_config_errors():
    from lmlab.errors import ConfigError
    from lmlab.generate import GenerationConfig

    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=10**400)

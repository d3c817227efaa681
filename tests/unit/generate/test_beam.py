"""Beam search: one beam is greedy; n beams equal transformers' generate(num_beams=n,
length_penalty=…) on the same weights exported with `export_hf`."""

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.generate import DecodeLoop, GenerationConfig, beam_search, generate, stream
from lmlab.model import save_model

from .conftest import tiny

PROMPTS = [[5, 17, 3, 44], [9, 1, 60, 2], [30, 31, 32, 33]]


@pytest.mark.parametrize("family", ["gpt2", "transformer"])
def test_one_beam_is_greedy(family):
    model = tiny(family)
    loop = DecodeLoop(model, PROMPTS, GenerationConfig(temperature=0, max_new_tokens=10))
    list(loop)
    eos = loop.generated[0][4]
    loop_eos = DecodeLoop(model, PROMPTS, GenerationConfig(temperature=0, max_new_tokens=10, stop_token_ids=[eos]))
    list(loop_eos)
    for stop, expect in (([], loop.generated), ([eos], loop_eos.generated)):
        got = beam_search(model, PROMPTS, GenerationConfig(num_beams=1, max_new_tokens=10), stop)
        assert [h.token_ids for h in got] == expect


def hf_beams(hf, family, prompts, eos, **kw):
    ids = torch.tensor(prompts)
    common = dict(do_sample=False, eos_token_id=eos, pad_token_id=0, **kw)
    if family == "transformer":
        out = hf.generate(ids, decoder_input_ids=torch.zeros(len(prompts), 1, dtype=torch.long),
                          forced_eos_token_id=None, min_length=0, **common)[:, 1:]
    else:
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), **common)[:, ids.size(1):]
    rows = []
    for r in out.tolist():  # transformers pads finished rows after their eos
        rows.append(r[:r.index(eos) + 1] if eos in r else r)
    return rows


def exported(family, tmp_path):
    """A tiny lmlab model and the same weights loaded by transformers (GPT2LMHeadModel or MarianMTModel)."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    from lmlab.hf.convert import export_hf

    # Marian ties its output projection to the embeddings
    model = tiny(family, **({"tie_embeddings": True, "init_std": 0.3} if family == "transformer" else {}))
    save_model(model, tmp_path / "lm")
    export_hf(tmp_path / "lm", tmp_path / "hf")
    cls = transformers.GPT2LMHeadModel if family == "gpt2" else transformers.MarianMTModel
    return model, cls.from_pretrained(tmp_path / "hf", use_safetensors=True).eval()


@pytest.mark.parametrize("family", ["gpt2", "transformer"])
def test_beam_search_equals_transformers(family, tmp_path, figure):
    model, hf = exported(family, tmp_path)
    # an end token that the beams actually meet, so that hypotheses of different lengths compete
    probe = beam_search(model, PROMPTS, GenerationConfig(num_beams=3, max_new_tokens=12))
    eos = probe[0].token_ids[3]
    early_ends, outcomes = 0, set()
    for lp in (-1.0, 0.0, 1.0, 3.0):
        for early in (False, True):
            cfg = GenerationConfig(num_beams=3, max_new_tokens=12, length_penalty=lp, early_stopping=early)
            ours = beam_search(model, PROMPTS, cfg, [eos])
            theirs = hf_beams(hf, family, PROMPTS, eos, max_new_tokens=12, num_beams=3, length_penalty=lp,
                              early_stopping=early)
            assert [h.token_ids for h in ours] == theirs, (lp, early)
            early_ends += sum(len(h.token_ids) < 12 for h in ours)
            outcomes.add(tuple(tuple(h.token_ids) for h in ours))
    figure(hypotheses_ending_early=early_ends, distinct_outcomes=len(outcomes))
    assert early_ends > 0 and len(outcomes) > 1  # the eos and the length penalty both mattered


def ngrams(seq, n):
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


@pytest.mark.parametrize("family", ["gpt2", "transformer"])
def test_no_repeat_ngram_equals_transformers(family, tmp_path):
    """no_repeat_ngram_size, greedy and with beams, against transformers on the same weights; the
    tiny random model loops, so the blocking changes what it writes."""
    model, hf = exported(family, tmp_path)
    eos = model.config.vocab_size - 1  # never reached: every row runs its 16 tokens
    for beams in (1, 3):
        free = beam_search(model, PROMPTS, GenerationConfig(num_beams=beams, max_new_tokens=16), [eos])
        changed = 0
        for n in (2, 3):
            cfg = GenerationConfig(num_beams=beams, max_new_tokens=16, no_repeat_ngram_size=n)
            ours = [h.token_ids for h in beam_search(model, PROMPTS, cfg, [eos])]
            theirs = hf_beams(hf, family, PROMPTS, eos, max_new_tokens=16, num_beams=beams, no_repeat_ngram_size=n)
            assert ours == theirs, (beams, n)
            for prompt, out in zip(PROMPTS, ours):
                row = (prompt if family == "gpt2" else [0]) + out  # a decoder's n-grams include its prompt
                assert len(set(ngrams(row, n))) == len(ngrams(row, n))
            changed += ours != [h.token_ids for h in free]
        assert changed, beams  # the unblocked model repeats itself
    loop = DecodeLoop(model, PROMPTS, GenerationConfig(temperature=0, max_new_tokens=16, no_repeat_ngram_size=2))
    list(loop)
    assert loop.generated == hf_beams(hf, family, PROMPTS, eos, max_new_tokens=16, num_beams=1, no_repeat_ngram_size=2)


def test_beam_text_api(bpe):
    model = tiny("gpt2", vocab_size=bpe.vocab_size)
    c = generate(model, bpe, "我们喜欢", num_beams=3, max_new_tokens=8, temperature=0)
    assert c.finish_reason in ("stop", "length") and len(c.token_ids) <= 8
    assert c.text == bpe.decode(c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids,
                                skip_special_tokens=True)
    with pytest.raises(ConfigError, match="cannot stream"):
        stream(model, bpe, "x", num_beams=2, temperature=0)


def test_greedy_with_repetition_penalty_equals_transformers(tmp_path):
    """The CTRL penalty on an exported model: same tokens as transformers' greedy generate."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    from lmlab.hf.convert import export_hf

    model = tiny("gpt2")
    save_model(model, tmp_path / "lm")
    export_hf(tmp_path / "lm", tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf", use_safetensors=True).eval()
    ids = torch.tensor(PROMPTS)
    plain = DecodeLoop(model, PROMPTS, GenerationConfig(temperature=0, max_new_tokens=15))
    list(plain)
    loop = DecodeLoop(model, PROMPTS, GenerationConfig(temperature=0, max_new_tokens=15, repetition_penalty=1.8))
    list(loop)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                         repetition_penalty=1.8, pad_token_id=0, eos_token_id=None)[:, ids.size(1):]
    assert loop.generated == theirs.tolist()
    assert loop.generated != plain.generated  # the penalty changed something


def test_encoder_decoder_text_generation(bpe):
    model = tiny("transformer", vocab_size=bpe.vocab_size)
    c = generate(model, bpe, "我们喜欢月光", max_new_tokens=9, temperature=0)
    src = bpe.encode("我们喜欢月光", add_special_tokens=True)
    loop = DecodeLoop(model, [src], GenerationConfig(temperature=0, max_new_tokens=9, stop_token_ids=[bpe.eos_id]))
    list(loop)
    assert c.token_ids == loop.generated[0] and c.prompt_tokens == len(src)
    beams = generate(model, bpe, ["我们喜欢月光", "spring"], num_beams=2, max_new_tokens=9, temperature=0)
    assert len(beams) == 2 and all(len(b.token_ids) <= 9 for b in beams)

"""Batched incremental decoding: cached = full recomputation, left-padded batch = rows alone,
budgets, stop tokens, cancellation."""

import pytest
import torch

from lmlab import machine
from lmlab.errors import ConfigError
from lmlab.generate import DecodeLoop, GenerationConfig
from lmlab.generate.decode import Stepper
from lmlab.model.linear import PackedWeights

from .conftest import V, tiny

FAMILIES = ["gpt2", "llama", "transformer"]
GREEDY = GenerationConfig(temperature=0, max_new_tokens=9)


def full_recompute_greedy(model, prompt, n):
    """Argmax decoding without any cache: the whole sequence through the model every step."""
    out, logits = [], []
    with torch.no_grad():
        if model.config.arch == "encoder-decoder":
            src, dec = torch.tensor([prompt]), [model.config.pad_token_id]
            for _ in range(n):
                z = model(src, decoder_input_ids=torch.tensor([dec + out])).logits[0, -1]
                logits.append(z)
                out.append(int(z.argmax()))
        else:
            for _ in range(n):
                z = model(torch.tensor([prompt + out])).logits[0, -1]
                logits.append(z)
                out.append(int(z.argmax()))
    return out, torch.stack(logits)


@pytest.mark.parametrize("family,extra", [pytest.param(f, {}, id=f) for f in FAMILIES]
                         + [pytest.param("transformer", {"copy": True}, id="transformer-copy")])
def test_cached_decoding_equals_full_recomputation(family, extra, figure):
    model = tiny(family, **extra)
    prompt = [5, 17, 3, 44, 8, 17, 60] if extra else [5, 17, 3, 44, 8]
    expect, expect_logits = full_recompute_greedy(model, prompt, 9)
    loop = DecodeLoop(model, [prompt], GREEDY)
    list(loop)
    assert loop.generated[0] == expect
    if extra:  # the copy head: tokens of the prompt come back
        assert set(expect) & set(prompt)
    # the logits themselves, step by step through the cache
    stepper = Stepper(model, [prompt], 9, pad_id=0, decoder_start_id=model.config.pad_token_id)
    with torch.inference_mode():
        got = [stepper.forward(stepper.first_ids)[0]]
        for t in expect[:-1]:
            got.append(stepper.forward(torch.tensor([[t]]))[0])
    diff = (torch.stack(got) - expect_logits).abs().max().item()
    figure(max_abs_logit_diff=diff)
    assert diff <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_equals_rows_alone(family, figure):
    model = tiny(family)
    prompts = [[5, 17, 3, 44, 8, 61, 2], [9], [30, 31, 32], [70, 3, 3, 3, 12]]
    batch = DecodeLoop(model, prompts, GREEDY)
    list(batch)
    for p, got in zip(prompts, batch.generated):
        alone = DecodeLoop(model, [p], GREEDY)
        list(alone)
        assert got == alone.generated[0]
    # logits of a padded row against the same row alone, through several cached steps
    steppers = [Stepper(model, prompts, 4, 0, model.config.pad_token_id),
                Stepper(model, prompts[1:2], 4, 0, model.config.pad_token_id)]
    with torch.inference_mode():
        z = [s.forward(s.first_ids) for s in steppers]
        worst = (z[0][1] - z[1][0]).abs().max().item()
        for t in (4, 50, 7):
            z = [steppers[0].forward(torch.full((4, 1), t)), steppers[1].forward(torch.tensor([[t]]))]
            worst = max(worst, (z[0][1] - z[1][0]).abs().max().item())
    figure(max_abs_logit_diff=worst)
    assert worst <= 1e-5


def test_sampled_rows_with_seeds_do_not_depend_on_the_batch():
    model = tiny("gpt2")
    prompts = [[5, 17, 3], [9, 1, 2, 3, 4, 5], [30]]
    configs = [GenerationConfig(temperature=1.3, seed=s, top_k=20, max_new_tokens=12) for s in (1, 2, 3)]
    batch = DecodeLoop(model, prompts, configs)
    list(batch)
    for p, c, got in zip(prompts, configs, batch.generated):
        alone = DecodeLoop(model, [p], c)
        list(alone)
        assert got == alone.generated[0]
    again = DecodeLoop(model, prompts, configs)
    list(again)
    assert again.generated == batch.generated
    assert len({tuple(g) for g in batch.generated}) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_are_not_degenerate(family):
    loop = DecodeLoop(tiny(family), [[5, 17, 3, 44, 8, 61, 2], [9], [30, 31, 32]], GREEDY)
    list(loop)
    assert len({t for g in loop.generated for t in g}) >= 6
    assert len({tuple(g) for g in loop.generated}) >= 2


def test_temperature_zero_is_deterministic():
    model = tiny("llama")
    runs = []
    for _ in range(3):
        loop = DecodeLoop(model, [[4, 8, 15, 16, 23]], GenerationConfig(temperature=0, max_new_tokens=15))
        list(loop)
        runs.append(loop.generated[0])
    assert runs[0] == runs[1] == runs[2]


def test_max_new_tokens_and_context_end():
    model = tiny("gpt2")  # max_seq_len 48
    loop = DecodeLoop(model, [[1, 2, 3], [4]], [GenerationConfig(max_new_tokens=5, seed=0),
                                                GenerationConfig(max_new_tokens=11, seed=0)])
    events = [e for step in loop for e in step]
    assert [len(g) for g in loop.generated] == [5, 11]
    assert loop.finish_reasons == ["length", "length"]
    assert loop.steps == 11  # one prefill + 10 steps: none after the last row finished
    assert [e.finish_reason for e in events if e.index == 0] == [None] * 4 + ["length"]
    long = DecodeLoop(model, [list(range(1, 41))], GenerationConfig(max_new_tokens=100, temperature=0))
    list(long)
    assert len(long.generated[0]) == 8 and long.finish_reasons == ["length"]  # 40 + 8 = max_seq_len
    with pytest.raises(ConfigError, match="max_seq_len"):
        DecodeLoop(model, [list(range(1, 49))], GREEDY)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_row_at_the_context_end_beside_a_longer_budget(family):
    """A prompt 3 tokens short of max_seq_len (48) batched with a short one that may write 20: the
    first row ends at the context ("length") while the batch steps on for the second, and both
    give the tokens they give alone."""
    model = tiny(family)
    prompts = [[(7 * i) % 90 + 1 for i in range(45)], [9, 2]]
    batch = DecodeLoop(model, prompts, GenerationConfig(temperature=0, max_new_tokens=20))
    list(batch)
    # (an encoder–decoder's decoder starts at position 0: its source does not take its room)
    assert [len(g) for g in batch.generated] == [20 if family == "transformer" else 3, 20]
    for p, got in zip(prompts, batch.generated):
        alone = DecodeLoop(model, [p], GenerationConfig(temperature=0, max_new_tokens=20))
        list(alone)
        assert got == alone.generated[0]


def test_a_long_batch_packs_its_products_for_its_size_and_gives_the_rows_alone():
    """40 new tokens for 2 rows repay weights packed for 2 rows (float32 on an Intel CPU with MKL);
    a server's pack (many short batches) does not pack them; the tokens are the rows' alone."""
    from lmlab.model import fused_step

    model = tiny("gpt2")
    prompts = [[5, 17, 3, 44, 8], [9, 2]]
    config = GenerationConfig(temperature=0, max_new_tokens=40)
    batch = DecodeLoop(model, prompts, config)
    list(batch)
    packs = fused_step._MKL_LINEAR is not None and batch.stepper.fused.route == "blas"
    assert batch.stepper.fused.rows == (2 if packs else None)
    for p, got in zip(prompts, batch.generated):
        alone = DecodeLoop(model, [p], config)
        list(alone)
        assert alone.stepper.fused.rows is None and got == alone.generated[0]
    served = DecodeLoop(model, prompts, config, pack=PackedWeights(bucket_rows=True))
    list(served)
    assert served.stepper.fused.rows is None and served.generated == batch.generated


@pytest.mark.parametrize("prompts", [[[5, 17, 3, 44, 8], [9, 2, 6, 1, 4]], [[5, 17, 3, 44, 8], [9, 2]]],
                         ids=["dense", "padded"])
def test_the_head_scores_only_the_last_position_of_a_prefill(prompts):
    """A prefill of T positions multiplies B rows by the vocabulary, not B·T (transformers'
    `logits_to_keep=1`), and decodes the same tokens as each row alone."""
    model = tiny("gpt2")
    rows = []
    model.head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape))
    batch = DecodeLoop(model, prompts, GenerationConfig(temperature=0, max_new_tokens=3))
    list(batch)
    assert rows == [torch.Size([2, model.config.d_model])] * 3
    for p, got in zip(prompts, batch.generated):
        alone = DecodeLoop(model, [p], GenerationConfig(temperature=0, max_new_tokens=3))
        list(alone)
        assert got == alone.generated[0]


def test_a_generation_stacks_the_qkv_weights_once(monkeypatch):
    """The prefill of a generation that goes on stacks [Wq; Wk; Wv] in the generation's pack, where
    the steps find it; only a one-token generation (no pack at all) concatenates per call."""
    from lmlab.model.attention import MultiHeadAttention

    model = tiny("gpt2")
    calls = []
    per_call = MultiHeadAttention._fused_qkv
    monkeypatch.setattr(MultiHeadAttention, "_fused_qkv", lambda self: calls.append(1) or per_call(self))
    pack = PackedWeights()
    list(DecodeLoop(model, [[5, 17, 3]], GenerationConfig(temperature=0, max_new_tokens=4), pack=pack))
    assert calls == [] and len(pack._stacked) == 2 * model.config.n_layers  # weights and biases
    list(DecodeLoop(model, [[5, 17, 3]], GenerationConfig(temperature=0, max_new_tokens=1)))
    assert len(calls) == model.config.n_layers


def test_stop_token_ends_a_row():
    model = tiny("gpt2")
    free = DecodeLoop(model, [[5, 17, 3]], GREEDY)
    list(free)
    stop = free.generated[0][3]
    first = free.generated[0].index(stop)
    loop = DecodeLoop(model, [[5, 17, 3]], GREEDY.replace(stop_token_ids=[stop]))
    list(loop)
    assert loop.generated[0] == free.generated[0][:first + 1] and loop.finish_reasons == ["stop"]


def test_closing_the_loop_stops_decoding():
    model = tiny("gpt2")
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    loop = DecodeLoop(model, [[1, 2, 3]], GenerationConfig(max_new_tokens=40, seed=0))
    it = iter(loop)
    for _ in range(3):
        next(it)
    it.close()
    n = len(calls)
    assert n == 3 and loop.steps == 3
    with pytest.raises(StopIteration):
        next(it)
    assert len(calls) == n
    handle.remove()


def test_finish_one_row_keeps_the_others():
    model = tiny("gpt2")
    loop = DecodeLoop(model, [[1, 2], [3, 4]], GenerationConfig(max_new_tokens=6, seed=1))
    seen = []
    for step in loop:
        seen.extend(e.index for e in step)
        if len(seen) == 2:
            loop.finish(0, "cancelled")
    assert len(loop.generated[0]) == 1 and len(loop.generated[1]) == 6


def test_bad_inputs_are_named():
    model = tiny("gpt2")
    with pytest.raises(ConfigError, match="prompt 1: is empty"):
        DecodeLoop(model, [[1], []])
    with pytest.raises(ConfigError, match="outside"):
        DecodeLoop(model, [[V]])
    with pytest.raises(ConfigError, match="head"):
        DecodeLoop(tiny("gpt2", head="classification"), [[1]])


def test_inference_mode_does_not_leak_into_the_consumer():
    loop = DecodeLoop(tiny("gpt2"), [[1, 2, 3]], GenerationConfig(max_new_tokens=4, seed=0))
    for _ in loop:
        assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    assert not torch.is_inference_mode_enabled()


@pytest.mark.skipif(torch.bfloat16 not in machine.detect().packed_dtypes, reason="no native bf16 oneDNN on this CPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_packed_weights_give_the_same_steps(family):
    """A bf16 model decodes through packed weights (and a bf16 cache) where bf16 is native; the
    logits stay within bf16 rounding of a CPU without it (nothing packed, a float32 cache; the
    packed product itself is bit-identical to F.linear: tests/unit/model/test_linear.py)."""
    model = tiny(family).to(torch.bfloat16)
    prompts = [[5, 17, 3, 44, 8], [9, 2]]

    def run():
        stepper = Stepper(model, prompts, 6, pad_id=0, decoder_start_id=model.config.pad_token_id)
        with torch.inference_mode():
            out = [stepper.forward(stepper.first_ids)]
            for t in (4, 50, 7, 7, 90):  # the same inputs on both routes, whatever their logits
                out.append(stepper.forward(torch.full((2, 1), t)))
        return torch.stack(out).float(), stepper.pack

    packed, pack = run()
    assert any(p is not None for _, p in pack._packed.values())  # the weights did go through the packed kernel
    with machine.force("avx2"):  # a CPU without native bf16: nothing packed
        plain, pack = run()
    assert all(p is None for _, p in pack._packed.values())
    assert (packed - plain).abs().max() <= 0.05 * plain.abs().max()



@pytest.mark.parametrize("family", FAMILIES)
def test_a_servers_pack_pads_prompts_to_a_bucket_length(family):
    """Under a server's pack a bf16 batch of prompts 5 and 2 tokens long runs at 6 positions (the
    bucket of 5: attention kernels are built per shape), padding masked: the same tokens and, within
    bf16 rounding, the same logits as without the padding; float32 is left at its length."""
    model = tiny(family).to(torch.bfloat16)
    prompts = [[5, 17, 3, 44, 8], [9, 2]]

    def run(model, pack):
        stepper = Stepper(model, prompts, 6, pad_id=0, decoder_start_id=model.config.pad_token_id, pack=pack)
        with torch.inference_mode():
            out = [stepper.forward(stepper.first_ids)]
            for t in (4, 50, 7):
                out.append(stepper.forward(torch.full((2, 1), t)))
        width = (stepper.src if model.config.arch == "encoder-decoder" else stepper.first_ids).size(1)
        return torch.stack(out).float(), width

    bucketed, width = run(model, PackedWeights(bucket_rows=True))
    plain, plain_width = run(model, PackedWeights())
    assert (width, plain_width) == (6, 5)
    assert (bucketed - plain).abs().max() <= 0.05 * plain.abs().max()
    served = DecodeLoop(model, prompts, GREEDY, pack=PackedWeights(bucket_rows=True))
    alone = DecodeLoop(model, prompts, GREEDY)
    list(served), list(alone)
    assert served.generated == alone.generated
    assert run(tiny(family), PackedWeights(bucket_rows=True))[1] == 5


@pytest.mark.parametrize("family", FAMILIES)
def test_a_reused_pack_does_not_grow_with_generations(family):
    """A server decodes every request with its model's one `PackedWeights`: the packed copies
    (the fused [Wq; Wk; Wv] included) are made by the first generation and reused by the next."""
    model = tiny(family)
    pack = PackedWeights()
    sizes = []
    for prompt in ([5, 17, 3], [9, 2, 4, 4, 1], [30]):
        list(DecodeLoop(model, [prompt], GREEDY, pack=pack))
        sizes.append((len(pack._packed), len(pack._stacked)))
    assert sizes[0] == sizes[1] == sizes[2] and sizes[0][1] > 0

@pytest.mark.skipif(not machine.detect().packed_dtypes, reason="this torch has no oneDNN packed linear")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_pack_shared_by_many_generations_stays_the_same_size(dtype):
    """A server decodes every request with its model's one `PackedWeights`: after the first
    generation the pack holds no more entries, and none for a tensor of a finished generation;
    the tokens are those of a generation with a pack of its own."""
    from lmlab.model.linear import PackedWeights

    model = tiny("gpt2").to(dtype)
    batches = [[[5, 17, 3, 44, 8, 61, 2][:i + 1], [9, 2]][:1 + i % 2] for i in range(6)]
    pack, sizes = PackedWeights(), []
    for prompts in batches:
        shared, alone = DecodeLoop(model, prompts, GREEDY, pack=pack), DecodeLoop(model, prompts, GREEDY)
        list(shared), list(alone)
        assert shared.generated == alone.generated
        sizes.append(len(pack._packed))
    assert sizes == [sizes[0]] * len(batches)
    fused = [w for _, w in pack._stacked.values()]  # [Wq; Wk; Wv] (and their biases) per layer, built once
    assert len(fused) >= model.config.n_layers
    assert set(pack._packed) <= {id(p) for p in model.parameters()} | {id(w) for w in fused}

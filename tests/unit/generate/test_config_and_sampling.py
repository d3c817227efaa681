"""GenerationConfig validation; logits processors against hand-computed distributions and
against transformers' own processors; seeds."""

import math

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.generate import GenerationConfig
from lmlab.generate.sampling import Sampler, apply_repetition_penalty, top_k_filter, top_p_filter


@pytest.mark.parametrize("field,value", [
    ("temperature", float("nan")), ("temperature", -0.1), ("temperature", float("inf")), ("temperature", "1"),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True), ("top_p", 0.0), ("top_p", 1.5), ("top_p", float("nan")),
    ("max_new_tokens", 0), ("max_new_tokens", True), ("max_new_tokens", 3.0), ("repetition_penalty", 0),
    ("seed", -1), ("seed", "7"), ("stop", [""]), ("stop", [3]), ("stop_token_ids", [-1]), ("num_beams", 0),
    ("no_repeat_ngram_size", -1), ("no_repeat_ngram_size", 1.5),
    ("length_penalty", float("nan")), ("early_stopping", 1), ("early_stopping", "sometimes"),
])
def test_bad_parameters_are_refused_by_name(field, value):
    with pytest.raises(ConfigError, match=field):
        GenerationConfig(**{field: value})


def test_from_dict_refuses_unknown_keys_and_accepts_a_single_stop_string():
    with pytest.raises(ConfigError, match="temprature"):
        GenerationConfig.from_dict({"temprature": 0.5})
    assert GenerationConfig.from_dict({"stop": "\n\n", "top_k": 5}).stop == ["\n\n"]
    with pytest.raises(ConfigError, match="beam search"):
        GenerationConfig(num_beams=2, top_k=5)


def probs(config: GenerationConfig, logits, seen=None):
    s = Sampler([config], len(logits))
    if seen is not None:
        s.observe(torch.tensor([seen]))
    return s.process(torch.tensor([logits], dtype=torch.float32)).softmax(-1)[0]


def test_top_k_hand_computed():
    z = [2.0, 1.0, 0.5, -1.0, 3.0]
    p = probs(GenerationConfig(top_k=2), z)
    e = [math.exp(3.0), math.exp(2.0)]
    assert torch.allclose(p, torch.tensor([e[1] / sum(e), 0, 0, 0, e[0] / sum(e)]), atol=1e-6)


def test_top_p_hand_computed():
    z = [math.log(x) for x in (0.15, 0.5, 0.05, 0.3)]
    # mass before each token in rank order: 0.5 → 0, 0.3 → 0.5, 0.15 → 0.8, 0.05 → 0.95
    assert torch.allclose(probs(GenerationConfig(top_p=0.8), z), torch.tensor([0, 0.625, 0, 0.375]), atol=1e-6)
    assert torch.allclose(probs(GenerationConfig(top_p=0.81), z), torch.tensor([0.15, 0.5, 0, 0.3]) / 0.95, atol=1e-6)
    assert torch.allclose(probs(GenerationConfig(top_p=0.4), z), torch.tensor([0, 1.0, 0, 0]), atol=1e-6)


def test_temperature_and_repetition_penalty_hand_computed():
    z = [2.0, -2.0, 1.0]
    # CTRL: seen tokens 0 and 1 → 2/2 = 1 and −2·2 = −4; then temperature 0.5 doubles
    expect = torch.tensor([2.0, -8.0, 2.0]).softmax(-1)
    assert torch.allclose(probs(GenerationConfig(temperature=0.5, repetition_penalty=2.0), z, seen=[0, 1, 1]), expect)


def test_processors_equal_transformers():
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    z = torch.randn(4, 53) * 3
    ids = torch.randint(0, 53, (4, 6))
    ours = apply_repetition_penalty(z, torch.zeros_like(z, dtype=torch.bool).scatter(1, ids, True),
                                    torch.full((4, 1), 1.3))
    theirs = tr.RepetitionPenaltyLogitsProcessor(1.3)(ids, z.clone())
    assert torch.allclose(ours, theirs)
    for k in (1, 5, 52):
        assert torch.equal(top_k_filter(z, torch.full((4, 1), k)), tr.TopKLogitsWarper(k)(ids, z.clone()))
    for p in (0.1, 0.5, 0.9):
        assert torch.equal(top_p_filter(z, torch.full((4, 1), p)).isinf(),
                           tr.TopPLogitsWarper(p)(ids, z.clone()).isinf())


def test_rows_keep_their_own_parameters():
    z = torch.randn(3, 40)
    configs = [GenerationConfig(top_k=3), GenerationConfig(top_p=0.5), GenerationConfig(temperature=0)]
    out = Sampler(configs, 40).process(z.clone())
    for i, c in enumerate(configs):
        assert torch.equal(out[i], Sampler([c], 40).process(z[i:i + 1].clone())[0])


def test_sampling_frequencies_follow_the_filtered_distribution():
    z = torch.tensor([[1.0, 0.0, 2.0, -1.0, 0.5]])
    c = GenerationConfig(top_k=3, temperature=0.7, seed=11)
    s = Sampler([c], 5)
    n = 4000
    counts = torch.bincount(torch.cat([s(z) for _ in range(n)]), minlength=5).float() / n
    expect = probs(c, z[0].tolist())
    assert counts[1] == 0 and counts[3] == 0
    assert (counts - expect).abs().max() < 0.03  # 4 σ of a binomial with n = 4000


def test_seeds_reproduce_and_differ():
    z = torch.randn(1, 300)
    a = [Sampler([GenerationConfig(seed=5)], 300) for _ in range(2)]
    seq = [[int(s(z)) for _ in range(20)] for s in a]
    assert seq[0] == seq[1]
    other = Sampler([GenerationConfig(seed=6)], 300)
    assert [int(other(z)) for _ in range(20)] != seq[0]
    unseeded = [Sampler([GenerationConfig()], 300) for _ in range(2)]
    assert [int(unseeded[0](z)) for _ in range(20)] != [int(unseeded[1](z)) for _ in range(20)]


def test_temperature_zero_is_argmax_even_with_filters():
    z = torch.randn(2, 30)
    s = Sampler([GenerationConfig(temperature=0, top_k=4, top_p=0.3)] * 2, 30)
    assert torch.equal(s(z), z.argmax(-1))

"""The fine-tuning batch source: every epoch a permutation of the examples, a pure function of
(seed, epoch); grouped by length, the same examples with a fraction of the padding."""

import numpy as np

from lmlab.tasks.task import EpochSource


def features(n=1003, seed=0):
    lengths = np.random.default_rng(seed).integers(3, 120, n)
    return [{"input_ids": [7] * int(k), "id": i} for i, k in enumerate(lengths)]


def epoch(source, n, e):
    """The ids of epoch e (n examples; batch_size divides n * e's start only by chance)."""
    start = e * n
    rows = [source.batch_at(g) for g in range(start // source.batch_size, (start + n) // source.batch_size + 1)]
    flat = [f["id"] for b in rows for f in b]
    skip = start - (start // source.batch_size) * source.batch_size
    return flat[skip:skip + n]


def padding(source, steps):
    padded = real = 0
    for g in range(steps):
        lens = [len(f["input_ids"]) for f in source.batch_at(g)]
        padded, real = padded + max(lens) * len(lens), real + sum(lens)
    return padded / real


def test_grouped_epochs_are_permutations_with_less_padding():
    feats = features()
    plain, grouped = EpochSource(feats, 7, seed=3), EpochSource(feats, 7, seed=3, group_by_length=True)
    for e in (0, 1):
        assert sorted(epoch(grouped, len(feats), e)) == list(range(len(feats)))
        assert sorted(epoch(plain, len(feats), e)) == list(range(len(feats)))
    assert epoch(grouped, len(feats), 0) != epoch(grouped, len(feats), 1)  # reshuffled each epoch
    ratio_plain, ratio_grouped = padding(plain, 140), padding(grouped, 140)
    assert ratio_plain > 1.3 and ratio_grouped < 1.1, (ratio_plain, ratio_grouped)


def test_batches_are_a_pure_function_of_the_step():
    feats = features()
    a, b = EpochSource(feats, 7, seed=3, group_by_length=True), EpochSource(feats, 7, seed=3, group_by_length=True)
    for g in range(300):  # a walks through epochs 0-2, b jumps to step 400 (as a resumed run does)
        a.batch_at(g)
    late = [f["id"] for f in a.batch_at(400)]
    assert [f["id"] for f in b.batch_at(400)] == late
    assert [f["id"] for f in EpochSource(feats, 7, seed=4, group_by_length=True).batch_at(400)] != late


def test_a_grouped_run_learns(tmp_path):
    from lmlab.tasks.finetune import finetune

    from .conftest import FIX, tiny

    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(tmp_path / "r"),
                 overrides=tiny("--train.max_steps=60", "--train.eval_every_steps=60", "--task.group_by_length=true"))
    assert s["eval"]["accuracy"] >= 0.8  # chance is 0.5; the ungrouped run of conftest reaches 0.85


def _classifier(family: str):
    import torch

    from lmlab.model import Transformer, preset

    torch.manual_seed(0)
    return Transformer(preset(f"{family}-tiny", vocab_size=99, d_model=36, n_heads=3, n_layers=2, d_ff=44,
                              max_seq_len=64, head="classification", n_labels=3, dropout=0.0,
                              attn_dropout=0.0)).eval()


def test_batches_are_as_long_as_their_longest_member_and_pads_change_nothing():
    """Padded to the longest row of each batch (not task.max_length); a short input scores the same
    alone and beside longer ones, for BERT (pads masked) and GPT (its last real token read)."""
    import torch

    from lmlab.tasks.sentiment import TASK, Classification
    from lmlab.tasks.task import TaskConfig

    class Tok:
        pad_id = 0

    rng = np.random.default_rng(0)
    feats = [{"input_ids": [int(i) for i in rng.integers(1, 99, n)], "label": 0} for n in (5, 17, 9)]
    prepared = Classification(pad_id=0).prepare(feats, 0)
    assert prepared.inputs["input_ids"].shape == (3, 17)
    assert prepared.inputs["attention_mask"].sum(-1).tolist() == [5, 17, 9]
    cfg = TaskConfig(max_length=64, predict_batch_size=3)
    for family in ("bert", "gpt2"):
        model = _classifier(family)
        together = TASK._probabilities(model, Tok(), cfg, feats)
        alone = torch.cat([TASK._probabilities(model, Tok(), cfg, [f]) for f in feats])
        assert torch.allclose(together, alone, atol=1e-6), family
        assert not torch.allclose(together[0], together[1])  # the inputs do differ

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

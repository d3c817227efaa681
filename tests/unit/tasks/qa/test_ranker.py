"""Sentence ranking for QA (lmlab.tasks.qa.ranker): the features say what they are named for, the
ranker learns a rule that the n-gram overlap gets wrong, and it survives JSON."""

import json
import random

import pytest
import torch

from lmlab.errors import CheckpointMismatch
from lmlab.tasks.qa.features import sentence_grades, wh_parts
from lmlab.tasks.qa.ranker import FEATURES, SentenceRanker, overlap_order, sentence_features, sentences

CONTEXT = "《红楼梦》是曹雪芹写的小说。曹雪芹写了红楼梦！！高鹗续了后四十回；全书一百二十回"


def test_sentences_end_after_their_marks_and_cover_the_context():
    spans = sentences(CONTEXT)
    assert [CONTEXT[a:b] for a, b in spans] == ["《红楼梦》是曹雪芹写的小说。", "曹雪芹写了红楼梦！！",
                                                "高鹗续了后四十回；", "全书一百二十回"]
    english = "It costs 3.5 euros. Trains arrive every hour? Yes"
    want = ["It costs 3.5 euros.", " Trains arrive every hour?", " Yes"]
    assert [english[a:b] for a, b in sentences(english)] == want


def test_features_measure_what_they_are_named_for():
    question = "高鹗续了全书多少回？"
    x = sentence_features(CONTEXT, question, wh_parts(question))
    assert x.shape == (4, len(FEATURES))
    col = {name: x[:, k].tolist() for k, name in enumerate(FEATURES)}
    q_chars = len(set("高鹗续了全书多少回？"))
    assert col["shared 1-grams"][2] == pytest.approx(len(set("高鹗续了回")) / q_chars)
    # before the wh-word: 高鹗续了全书, whose end 全书 occurs in sentence 4 only; after it: 回
    assert col["start cue run"] == pytest.approx([0.0, 0.0, 0.0, len("全书") / len("高鹗续了全书")])
    assert col["end cue run"] == [0.0, 0.0, 1.0, 1.0]
    assert col["first by overlap"] == [0.0, 0.0, 1.0, 0.0] and col["after the first"] == [0.0, 0.0, 0.0, 1.0]
    assert col["asks 多"] == [1.0] * 4 and col["asks 什"] == [0.0] * 4
    assert col["digits"] == [0.0] * 4 and col["has 《"] == [1.0, 0.0, 0.0, 0.0]
    assert col["previous: overlap / best"][3] == col["overlap / best"][2] == 1.0
    assert overlap_order(CONTEXT, question)[0] == 2


def _planted(rng: random.Random) -> tuple[str, str, int]:
    """A context whose answer sits in the sentence *after* the one that repeats the question."""
    words = ["山川", "河流", "城市", "乡村", "田野", "森林", "湖泊", "海洋", "草原", "沙漠"]
    n = rng.randint(3, 6)
    body = [f"{rng.choice(words)}{rng.choice(words)}很美{k}。" for k in range(n)]
    i = rng.randrange(n - 1)
    q = f"{rng.choice(words)}的{rng.choice(words)}在哪里"
    body[i] = q[:-3] + "很有名。"
    return "".join(body), q + "？", i + 1


def test_the_ranker_learns_a_rule_the_overlap_gets_wrong_and_keeps_it_through_json():
    rng = random.Random(0)
    train = [_planted(rng) for _ in range(300)]
    test = [_planted(rng) for _ in range(100)]
    ranker = SentenceRanker.fit([sentence_features(c, q, wh_parts(q)) for c, q, _ in train], [g for _, _, g in train],
                                steps=300)
    hits = sum(ranker.order(sentence_features(c, q, wh_parts(q)))[0] == g for c, q, g in test)
    by_overlap = sum(overlap_order(c, q)[:1] == [g] for c, q, g in test)
    assert hits >= 95 and by_overlap <= 20
    again = SentenceRanker(json.loads(json.dumps(ranker.state())))
    with pytest.raises(CheckpointMismatch, match="other sentence features"):
        SentenceRanker({**ranker.state(), "features": ["shared 1-grams"]})
    x = sentence_features(*test[0][:2], wh_parts(test[0][1]))
    torch.testing.assert_close(again.scores(x), ranker.scores(x))
    c, q, g = test[0]
    grades = sentence_grades(c, q, [(i, i + 1) for i in range(len(c))], ranker)
    a, b = sentences(c)[g]
    assert set(grades[a:b]) == {3}

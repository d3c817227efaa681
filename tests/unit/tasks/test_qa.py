"""Extractive QA: every training span maps back to its answer through the tokenizer's offsets
(Chinese and English), long contexts are windowed, bad offsets are reported by id, and a tiny
model learns the fixture."""

import json

import pytest

import lmlab
from lmlab.errors import ConfigError, DataError
from lmlab.tasks.finetune import finetune
from lmlab.tasks.qa import TASK
from lmlab.tasks.task import TaskConfig, train_task_tokenizer

from .conftest import FIX, tiny


@pytest.fixture(scope="module", params=["qa_zh_train.json", "qa_en_train.json"])
def data(request, tmp_path_factory):
    examples = TASK.read(str(FIX / request.param), TaskConfig())
    tok = train_task_tokenizer(TASK, TASK.texts(examples), tmp_path_factory.mktemp("tok"), TaskConfig(vocab_size=200))
    return examples, tok


def test_spans_map_back_to_answers_in_every_window(data):
    examples, tok = data
    cfg = TaskConfig(max_length=24, stride=6)  # contexts longer than a window
    n_windows = 0
    for e in examples:
        windows = TASK._windows(e, tok, cfg, training=True)
        n_windows += len(windows)
        enc = tok.backend.encode(e.context, add_special_tokens=False)
        hits = [w for w in windows if w["start"] > 0]
        assert hits, f"{e.id}: no window holds the answer"
        for w in windows:
            assert len(w["input_ids"]) <= cfg.max_length and len(w["token_type_ids"]) == len(w["input_ids"])
            if w["start"]:
                s = w["begin"] + w["start"] - w["offset"]
                t = w["begin"] + w["end"] - w["offset"]
                text = e.context[enc.offsets[s][0]:enc.offsets[t][1]]
                assert text == e.answers[0].text
        # consecutive windows overlap by the stride
        for a, b in zip(windows, windows[1:]):
            assert a["stop"] - b["begin"] == cfg.stride
    assert n_windows > len(examples)  # windowing happened


def test_answer_not_at_offset_is_counted_with_its_id():
    examples = TASK.read(str(FIX / "qa_en_train.json"), TaskConfig())
    assert examples.report["dropped_answers"] == 1 and examples.report["dropped_ids"] == ["en-bad-offset"]
    assert all(e.id != "en-bad-offset" for e in examples)


def test_bad_qa_input(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": "abc", "qas": [{"id": "q1", "question": "?"}]}]}]}))
    with pytest.raises(DataError, match="question q1: missing 'question' or 'answers'"):
        TASK.read(str(tmp_path / "q.json"), TaskConfig())
    with pytest.raises(ConfigError, match="task.stride"):
        examples = TASK.read(str(FIX / "qa_zh_dev.json"), TaskConfig())
        TASK._windows(examples[0], _StubTok(), TaskConfig(max_length=24, stride=20), True)


class _StubTok:
    cls_id, sep_id, pad_id = 1, 2, 0

    def encode(self, text):
        return [5] * 6

    class backend:
        @staticmethod
        def encode(text, add_special_tokens=False):
            class E:
                ids = [7] * 40
                offsets = [(i, i + 1) for i in range(40)]
            return E()


def test_chinese_qa_end_to_end(tmp_path):
    s = finetune("qa", str(FIX / "qa_zh_train.json"), str(FIX / "qa_zh_dev.json"), out=str(tmp_path / "r"),
                 overrides=tiny("--train.max_steps=150", "--train.eval_every_steps=50", "--task.max_length=32",
                                "--task.stride=8"))
    assert s["eval"]["style"] == "cmrc" and s["eval"]["f1"] >= 70  # random spans score ≈ 10
    qa = lmlab.pipeline("qa", tmp_path / "r" / "model")
    context = "火车每小时一班。李四出生在杭州。河水流过山谷。"
    out = qa({"question": "李四出生在哪里？", "context": context})
    assert context[out["start"]:out["end"]] == out["answer"] and 0 < out["score"] <= 1
    with pytest.raises(DataError, match="question"):
        qa({"question": "", "context": context})

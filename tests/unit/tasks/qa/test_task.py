"""Extractive QA: every training span maps back to its answer through the tokenizer's offsets
(Chinese and English), long contexts are windowed, bad offsets are reported by id, and a tiny
model learns the fixture."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.artifacts import sha256_file
from lmlab.tasks.evaluate import evaluate_task
from lmlab.errors import ConfigError, DataError
from lmlab.tasks.finetune import finetune
from lmlab.tasks.qa import TASK
from lmlab.tasks.task import QAConfig, TaskConfig, train_task_tokenizer

from ..conftest import FIX, assert_resumes_to_the_same_weights, tiny


@pytest.fixture(scope="module", params=["qa_zh_train.json", "qa_en_train.json"])
def data(request, tmp_path_factory):
    examples = TASK.read(str(FIX / request.param), TaskConfig())
    tok = train_task_tokenizer(TASK, TASK.texts(examples), tmp_path_factory.mktemp("tok"), TaskConfig(vocab_size=200))
    return examples, tok


def test_spans_map_back_to_answers_in_every_window(data):
    examples, tok = data
    cfg = TaskConfig(max_length=24, qa=QAConfig(stride=6))  # contexts longer than a window
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
                assert text in {a.text for a in e.answers}
        # consecutive windows overlap by the stride
        distinct = list({w["begin"]: w for w in windows}.values())
        for a, b in zip(distinct, distinct[1:]):
            assert a["stop"] - b["begin"] == cfg.qa.stride
    assert n_windows > len(examples)  # windowing happened


def test_a_paragraph_is_encoded_once_for_all_its_questions(data, monkeypatch):
    examples, tok = data
    cfg = TaskConfig(max_length=24, qa=QAConfig(stride=6, question_match=True))
    asked_twice = list(examples) * 2  # every paragraph with two questions
    alone = [w for e in asked_twice for w in TASK._windows(e, tok, cfg, training=True)]  # nothing shared
    calls, encode = [], tok.backend.encode

    class Spy:
        token_to_id = tok.backend.token_to_id

        def encode(self, text, **kw):
            calls.append(text)
            return encode(text, **kw)
    monkeypatch.setattr(tok, "backend", Spy())
    assert TASK.features(asked_twice, tok, {}, cfg) == alone  # the same windows
    paragraphs = {e.context for e in examples}
    assert sum(c in paragraphs for c in calls) == len(paragraphs)  # each encoded once, not twice


def test_answer_not_at_offset_is_counted_with_its_id():
    examples = TASK.read(str(FIX / "qa_en_train.json"), TaskConfig())
    assert examples.report["dropped_answers"] == 1 and examples.report["dropped_ids"] == ["en-bad-offset"]
    assert all(e.id != "en-bad-offset" for e in examples)


def test_bad_qa_input(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": "abc", "qas": [{"id": "q1", "question": "?"}]}]}]}))
    with pytest.raises(DataError, match="question q1: missing 'question' or 'answers'"):
        TASK.read(str(tmp_path / "q.json"), TaskConfig())
    with pytest.raises(ConfigError, match="task.qa.stride"):
        examples = TASK.read(str(FIX / "qa_zh_dev.json"), TaskConfig())
        TASK._windows(examples[0], _StubTok(), TaskConfig(max_length=24, qa=QAConfig(stride=20)), True)


class _StubTok:
    cls_id, sep_id, pad_id = 1, 2, 0

    class backend:
        @staticmethod
        def encode(text, add_special_tokens=False):
            class E:  # a token per character
                ids = [7] * len(text)
                offsets = [(i, i + 1) for i in range(len(text))]
            return E()


def test_chinese_qa_end_to_end(tmp_path):
    s = finetune("qa", str(FIX / "qa_zh_train.json"), str(FIX / "qa_zh_dev.json"), out=str(tmp_path / "r"),
                 overrides=tiny("--train.max_steps=150", "--train.eval_every_steps=50", "--task.max_length=32",
                                "--task.qa.stride=8"))
    assert s["eval"]["style"] == "cmrc" and s["eval"]["f1"] >= 70  # random spans score ≈ 10
    qa = lmlab.pipeline("qa", tmp_path / "r" / "model")
    context = "火车每小时一班。李四出生在杭州。河水流过山谷。"
    out = qa({"question": "李四出生在哪里？", "context": context})
    assert context[out["start"]:out["end"]] == out["answer"] and 0 < out["score"] <= 1
    with pytest.raises(DataError, match="question"):
        qa({"question": "", "context": context})


def _asked_words(text: str) -> list[tuple[int, int]]:
    """Word spans as BERT's pre-tokenizer cuts them: a CJK character, a run of other word
    characters, or one punctuation mark (written independently of the tokenizer)."""
    return [m.span() for m in re.finditer(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+|[^\w\s]", text)]


def test_question_match_marks_context_tokens_whose_word_is_in_the_question(data):
    examples, tok = data
    plain = TaskConfig(max_length=24, qa=QAConfig(stride=6))
    matched = TaskConfig(max_length=24, qa=QAConfig(stride=6, question_match=True))
    assert TASK.model_fields({}, plain) == {"head": "span"}
    assert TASK.model_fields({}, matched) == {"head": "span", "type_vocab_size": 3}
    n_matched = 0
    for e in examples:
        enc = tok.backend.encode(e.context, add_special_tokens=False)
        asked = {e.question[s:t].lower() for s, t in _asked_words(e.question)}
        words = _asked_words(e.context)
        for a, b in zip(TASK._windows(e, tok, plain, True), TASK._windows(e, tok, matched, True), strict=True):
            assert a["input_ids"] == b["input_ids"] and (a["start"], a["end"]) == (b["start"], b["end"])
            assert set(a["token_type_ids"][a["offset"]:]) == {1}
            assert b["token_type_ids"][:b["offset"]] == [0] * b["offset"] and b["token_type_ids"][-1] == 1
            for t, segment in zip(range(b["begin"], b["stop"]), b["token_type_ids"][b["offset"]:-1]):
                s, t_end = enc.offsets[t]
                word = next(e.context[ws:we] for ws, we in words if ws <= s < we)
                if re.fullmatch(r"[\u4e00-\u9fff]", word):  # with a neighbour, as a 2-character string
                    pairs = {e.context[max(0, s - 1):s + 1], e.context[s:s + 2]}
                    hit = any(len(p) == 2 and p in e.question for p in pairs)
                else:
                    hit = word.lower() in asked
                assert segment == (2 if hit else 1), (e.id, word)
                n_matched += segment == 2
    assert n_matched > 0


def test_wh_split_takes_the_first_and_longest_wh_word():
    from lmlab.tasks.qa.features import wh_split

    assert wh_split("曹雪芹写了什么？") == ("曹雪芹写了", "")
    assert wh_split("他为什么哭了？") == ("他", "哭了")  # not 什么 inside 为什么
    assert wh_split("蓍分布在哪些地区？") == ("蓍分布在", "地区")  # not 哪 alone
    assert wh_split("谁写了什么书?") == ("", "写了什么书")
    assert wh_split("红楼梦很长。") is None


def _grade(run):
    return 0 if run < 2 else 1 if run < 4 else 2


def test_answer_cues_mark_the_tokens_where_the_wh_word_sits_in_the_context(data):
    """Against the definition, by slicing: a start cue is the longest k with context[s-k:s] ==
    before[-k:], an end cue the longest k with context[e:e+k] == after[:k]; the run grade marks a
    character inside a 4-character string of the question."""
    from lmlab.datasets.qa import QAExample
    from lmlab.tasks.qa.features import segment_types, wh_split

    examples, tok = data
    cued = TaskConfig(max_length=32, qa=QAConfig(stride=6, question_match=True, answer_cues=True))
    matched = TaskConfig(max_length=32, qa=QAConfig(stride=6, question_match=True))
    assert segment_types(cued) == 28 and TASK.model_fields({}, cued)["type_vocab_size"] == 28
    context = "《红楼梦》是曹雪芹写的小说。曹雪芹写了红楼梦，高鹗续了后四十回。"
    own = [QAExample("a", "", context, "曹雪芹写了什么？"), QAExample("b", "", context, "什么是曹雪芹写的小说？"),
           QAExample("c", "", context, "高鹗续了多少回？")]
    seen = set()
    for e in [*own, *(x for x in examples if any("\u4e00" <= c <= "\u9fff" for c in x.question))]:
        enc = tok.backend.encode(e.context, add_special_tokens=False)
        before, after = wh_split(e.question) or ("", "")
        grams = {e.question[i:i + 4] for i in range(len(e.question) - 3)}
        for w, v in zip(TASK._windows(e, tok, matched, False), TASK._windows(e, tok, cued, False), strict=True):
            assert w["input_ids"] == v["input_ids"] and v["token_type_ids"][:v["offset"]] == [0] * v["offset"]
            for t, plain, got in zip(range(v["begin"], v["stop"]), w["token_type_ids"][w["offset"]:-1],
                                     v["token_type_ids"][v["offset"]:-1]):
                s, t_end = enc.offsets[t]
                start = max([k for k in range(min(s, len(before)) + 1)
                             if e.context[s - k:s] == before[len(before) - k:]])
                end = max([k for k in range(len(after) + 1) if e.context[t_end:t_end + k] == after[:k]])
                run = any(e.context[i:i + 4] in grams for i in range(max(0, s - 3), t_end))
                want = (3 if run else plain) + 3 * (_grade(start) + 3 * _grade(end))
                assert got == want, (e.id, e.context[s:t_end])
                seen.add((e.id, e.context[s:t_end], got))
    assert ("a", "红", 1 + 3 * 2) in seen  # after 曹雪芹写了 (a start cue of 5 characters)
    assert ("b", "》", 1 + 3 * 3 * 2) in seen  # before 是曹雪芹写的小说 (an end cue)
    assert ("c", "后", 1 + 3 * 2) in seen  # after 高鹗续了 (4 characters)
    assert ("c", "高", 3) in seen  # inside 高鹗续了, a run the question holds
    assert any(g % 3 == 0 for _, _, g in seen)  # long runs occur


def _sentence_grade_oracle(context: str, question: str) -> list[int]:
    """Per character of a Chinese-only context, by string slicing: 3 in the sentence with the highest
    Σ n·|shared substrings of length n| (n = 1..4), 1 in the second, 2 in the one after the first
    (unless second), 0 elsewhere; a sentence sharing nothing is not ranked."""
    bounds, i = [0], 0
    while i < len(context):
        if context[i] in "。！？；!?;":
            while i + 1 < len(context) and context[i + 1] in "。！？；!?;":
                i += 1
            bounds.append(i + 1)
        i += 1
    bounds = sorted(set(bounds + [len(context)]))
    spans = list(zip(bounds, bounds[1:]))

    def score(s: str) -> int:
        return sum(n * len({question[i:i + n] for i in range(len(question) - n + 1)}
                           & {s[i:i + n] for i in range(len(s) - n + 1)}) for n in range(1, 5))
    scores = [score(context[a:b]) for a, b in spans]
    ranked = sorted((v, -k) for k, v in enumerate(scores) if v > 0)[::-1]
    grade = {-k: g for (_, k), g in zip(ranked, (3, 1))}
    if ranked and -ranked[0][1] + 1 < len(spans):
        grade.setdefault(-ranked[0][1] + 1, 2)
    return [grade.get(k, 0) for k, (a, b) in enumerate(spans) for _ in range(a, b)]


def test_sentence_match_grades_the_sentences_by_what_they_share_with_the_question(data):
    from lmlab.datasets.qa import QAExample
    from lmlab.tasks.qa.features import segment_types, sentence_grades

    examples, tok = data
    cued = TaskConfig(max_length=32, qa=QAConfig(stride=6, question_match=True, answer_cues=True))
    both = TaskConfig(max_length=32, qa=QAConfig(stride=6, question_match=True, answer_cues=True, sentence_match=True))
    matched = TaskConfig(max_length=32, qa=QAConfig(stride=6, question_match=True, sentence_match=True))
    assert segment_types(both) == 1 + 27 * 4 and TASK.model_fields({}, both)["type_vocab_size"] == 109
    assert segment_types(matched) == 1 + 2 * 4
    context = "《红楼梦》是曹雪芹写的小说。曹雪芹写了红楼梦！！高鹗续了后四十回；全书一百二十回"
    own = [QAExample("a", "", context, "高鹗续了全书多少回？"), QAExample("b", "", context, "谁写了红楼梦？"),
           QAExample("c", "", context, "天气如何？")]
    seen = {}
    for e in [*own, *(x for x in examples if any("\u4e00" <= c <= "\u9fff" for c in x.context))]:
        want = _sentence_grade_oracle(e.context, e.question)
        enc = tok.backend.encode(e.context, add_special_tokens=False)
        for w, v in zip(TASK._windows(e, tok, cued, False), TASK._windows(e, tok, both, False), strict=True):
            assert w["input_ids"] == v["input_ids"] and v["token_type_ids"][:v["offset"]] == [0] * v["offset"]
            for t, plain, got in zip(range(v["begin"], v["stop"]), w["token_type_ids"][w["offset"]:-1],
                                     v["token_type_ids"][v["offset"]:-1]):
                s, t_end = enc.offsets[t]
                assert got == plain + 27 * want[s], (e.id, e.context[s:t_end])
                seen[(e.id, e.context[s:t_end])] = want[s]
    assert seen[("a", "鹗")] == 3 and seen[("a", "百")] == 1 and seen[("a", "《")] == 0  # 高鹗续了 / 全书, 回 / nothing
    assert seen[("b", "！")] == 3 and seen[("b", "《")] == 1 and seen[("b", "鹗")] == 2  # 写了红楼梦 / 红楼梦 / next
    assert {g for (i, _), g in seen.items() if i == "c"} == {0}  # shares nothing: no sentence marked
    english = "Heidi was born in Oslo. Trains arrive every hour; Heidi takes one."
    grades = sentence_grades(english, "Where was Heidi born?", [(i, i + 1) for i in range(len(english))])
    assert grades[english.index("Oslo")] == 3 and grades[english.index("takes")] == 1


def test_expected_f1_is_the_probability_weighted_overlap_f1_of_character_sets():
    from lmlab.tasks.qa.task import _expected_f1

    torch.manual_seed(3)
    starts = torch.randint(0, 40, (7,))
    chars = torch.stack([starts, starts + torch.randint(1, 12, (7,))], 1)
    p = torch.rand(7)

    def f1(a, b):  # over the sets of character positions
        x, y = set(range(*a)), set(range(*b))
        return 2 * len(x & y) / (len(x) + len(y))
    want = [sum(float(p[j]) * f1(chars[i].tolist(), chars[j].tolist()) for j in range(7)) / float(p.sum())
            for i in range(7)]
    torch.testing.assert_close(_expected_f1(chars, p), torch.tensor(want))
    one_hot = torch.zeros(7).index_fill_(0, torch.tensor([4]), 1.0)
    assert int(_expected_f1(chars, one_hot).argmax()) == 4  # all the mass on one span: that span
    with pytest.raises(ConfigError, match="task.qa.decode"):
        TaskConfig(qa=QAConfig(decode="mbr"))
    with pytest.raises(ConfigError, match="task.qa.sentence_match=true"):
        TaskConfig(qa=QAConfig(sentence_ranker=True))


def test_a_wider_segment_table_leaves_the_init_model_unchanged(tmp_path):
    from lmlab.model import Transformer, load_model
    from lmlab.model.config import preset
    from lmlab.model.pretrained import save_model
    from lmlab.model.pretrained import model_from_init

    torch.manual_seed(0)
    base = Transformer(preset("bert-tiny", vocab_size=99, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                              max_seq_len=16, head="span", pooler=False))
    save_model(base, tmp_path / "m")
    grown, fresh = model_from_init(tmp_path / "m", {"head": "span", "type_vocab_size": 3})
    assert grown.config.type_vocab_size == 3 and fresh == []
    base, grown = load_model(tmp_path / "m").eval(), grown.eval()
    ids = torch.randint(5, 99, (3, 7))
    types = torch.tensor([[0, 0, 1, 1, 1, 1, 1]] * 3)
    as_matched = types.masked_fill(torch.rand(3, 7) < 0.5, 2) * (types > 0)
    with torch.no_grad():
        want = base(input_ids=ids, token_type_ids=types).logits
        got = grown(input_ids=ids, token_type_ids=as_matched).logits
    torch.testing.assert_close(got, want)
    assert not torch.equal(types, as_matched)


def test_answer_cues_and_sentence_match_end_to_end_in_chinese(tmp_path):
    s = finetune("qa", str(FIX / "qa_zh_train.json"), str(FIX / "qa_zh_dev.json"), out=str(tmp_path / "a"),
                 overrides=tiny("--train.max_steps=3", "--task.max_length=32", "--task.qa.stride=8",
                                "--task.qa.question_match=true", "--task.qa.answer_cues=true",
                                "--task.qa.sentence_match=true", "--task.qa.sentence_ranker=true"))
    assert s["eval"]["questions"] > 0
    qa = lmlab.pipeline("qa", s["model"])
    assert qa.model.config.type_vocab_size == 109
    ranker = json.loads((Path(s["model"]) / "task.json").read_text())["meta"]["sentence_ranker"]
    assert len(ranker["w2"]) == 32 and len(ranker["w1"][0]) == len(ranker["features"])
    context = "《红楼梦》是曹雪芹写的小说。"
    out = qa({"question": "曹雪芹写了什么？", "context": context})
    assert 0 <= out["start"] <= out["end"] and out["answer"] == context[out["start"]:out["end"]]
    mbr = evaluate_task("qa", s["model"], str(FIX / "qa_zh_dev.json"), out=str(tmp_path / "e.json"),
                        overrides=["--task.qa.decode=expected_f1"])
    assert mbr["questions"] == s["eval"]["questions"] and 0 <= mbr["f1"] <= 100

    # a model directory written while every task field sat at the top level of task.json still loads
    old = tmp_path / "old"
    shutil.copytree(s["model"], old)
    info = json.loads((old / "task.json").read_text())
    nested = info["config"]
    info["config"] = {**{k: v for k, v in nested.items() if k not in ("qa", "seq2seq")},
                      **nested["qa"], **nested["seq2seq"]}
    (old / "task.json").write_text(json.dumps(info))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"]["task.json"] = {"sha256": sha256_file(old / "task.json"),
                                      "bytes": (old / "task.json").stat().st_size}
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert "question_match" in info["config"] and "qa" not in info["config"]
    again = lmlab.pipeline("qa", old)
    assert again.cfg == qa.cfg and again.cfg.qa.answer_cues and again.cfg.qa.stride == 8
    assert again({"question": "曹雪芹写了什么？", "context": context}) == out


def test_question_match_end_to_end_from_an_init_model(tmp_path):
    plain = finetune("qa", str(FIX / "qa_en_train.json"), str(FIX / "qa_en_dev.json"), out=str(tmp_path / "a"),
                     overrides=tiny("--train.max_steps=5", "--task.max_length=32", "--task.qa.stride=8"))
    s = finetune("qa", str(FIX / "qa_en_train.json"), str(FIX / "qa_en_dev.json"), init=plain["model"],
                 out=str(tmp_path / "b"), overrides=[o for o in tiny("--train.max_steps=5", "--task.max_length=32",
                 "--task.qa.stride=8", "--task.qa.question_match=true") if not o.startswith("--model.")])
    assert s["eval"]["questions"] > 0
    qa = lmlab.pipeline("qa", s["model"])
    context = "Heidi was born in Oslo. Trains arrive every hour."
    out = qa({"question": "Where was Heidi born?", "context": context})
    assert 0 <= out["start"] <= out["end"] and out["answer"] == context[out["start"]:out["end"]]


def test_negative_windows_keeps_every_answer_and_a_fixed_share_of_the_rest(data):
    examples, tok = data
    full = TASK.features(examples, tok, {}, TaskConfig(max_length=24, qa=QAConfig(stride=6)))
    half = TASK.features(examples, tok, {}, TaskConfig(max_length=24, qa=QAConfig(stride=6, negative_windows=0.5)))
    positives, negatives = [f for f in full if f["start"]], [f for f in full if not f["start"]]
    assert [f for f in half if f["start"]] == positives
    kept = [f for f in half if not f["start"]]
    assert all(f in negatives for f in kept) and 0 < len(kept) < len(negatives)
    halved = TaskConfig(max_length=24, qa=QAConfig(stride=6, negative_windows=0.5))
    assert half == TASK.features(examples, tok, {}, halved)
    with pytest.raises(ConfigError, match="task.qa.negative_windows"):
        TaskConfig(qa=QAConfig(negative_windows=0))


def test_every_distinct_gold_answer_is_a_training_target(data):
    from lmlab.datasets.qa import Answer, QAExample

    _, tok = data
    context = "Heidi was born in Oslo in the north. The weather was mild that year."
    e = QAExample("q", "t", context, "Where was Heidi born?",
                  [Answer("Oslo", 18), Answer("in Oslo", 15), Answer("Oslo", 18)])  # 2 distinct spans
    windows = TASK._windows(e, tok, TaskConfig(max_length=64, qa=QAConfig(stride=6)), training=True)
    enc = tok.backend.encode(context, add_special_tokens=False)
    got = sorted(context[enc.offsets[w["start"] - w["offset"]][0]:enc.offsets[w["end"] - w["offset"]][1]]
                 for w in windows)
    assert got == ["Oslo", "in Oslo"] and windows[0]["input_ids"] == windows[1]["input_ids"]


def test_preempted_qa_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    """The span head reads the tokens, not the pooler, so the pooler has no optimizer state;
    a preempted run still resumes, to the weights of an uninterrupted one."""
    def run(out):
        return finetune("qa", str(FIX / "qa_en_train.json"), str(FIX / "qa_en_dev.json"), out=str(out),
                        overrides=tiny("--train.max_steps=8", "--train.eval_every_steps=4", "--task.max_length=32",
                                       "--task.qa.stride=8", "--model.dropout=0.0"))
    assert_resumes_to_the_same_weights(run, tmp_path, monkeypatch, stop_at=3)

"""Summarisation and translation: teacher forcing, readers, and a tiny model that learns."""

import pytest

import lmlab
from lmlab.errors import DataError
from lmlab.tasks.finetune import finetune
from lmlab.tasks.seq2seq import Seq2SeqObjective
from lmlab.tasks.summarization import TASK as SUMM
from lmlab.tasks.task import TaskConfig
from lmlab.tasks.translation import TASK as MT

from .conftest import FIX, tiny

SEQ = ["--model.d_model=64", "--model.d_ff=128", "--model.dropout=0", "--optim.lr=2e-3",
       "--optim.warmup_steps=30", "--task.vocab_size=300", "--task.max_length=48", "--task.max_target_length=24"]


def test_teacher_forcing_shifts_by_one():
    p = Seq2SeqObjective(pad_id=0, bos_id=5).prepare(
        [{"input_ids": [7, 8, 9], "target_ids": [11, 12, 6]}, {"input_ids": [7], "target_ids": [13, 6]}], 0)
    x = p.inputs
    assert x["decoder_input_ids"].tolist() == [[5, 11, 12], [5, 13, 0]]
    assert x["labels"].tolist() == [[11, 12, 6], [13, 6, -100]]
    assert x["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]] and p.n_targets == 5


def test_parallel_files_must_align(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\n")
    (tmp_path / "a.de").write_text("eins\n")
    with pytest.raises(DataError, match="has 2 lines but .* has 1"):
        MT.read(f"{tmp_path / 'a.en'},{tmp_path / 'a.de'}", TaskConfig())
    (tmp_path / "s.jsonl").write_text('{"dialogue": "hi", "summary": ["a greeting", "hello"]}\n')
    pairs = SUMM.read(str(tmp_path / "s.jsonl"), TaskConfig())
    assert pairs[0].targets == ["a greeting", "hello"]  # several references


def test_translation_learns_and_beams(tmp_path):
    files = lambda split: f"{FIX / f'mt_{split}.en'},{FIX / f'mt_{split}.de'}"  # noqa: E731
    s = finetune("translation", files("train"), files("dev"), out=str(tmp_path / "r"),
                 overrides=tiny(*SEQ, "--train.max_steps=400", "--train.eval_every_steps=200"))
    assert s["eval"]["bleu"] >= 60 and "tok:13a" in s["eval"]["bleu_signature"]
    mt = lmlab.pipeline("translation", tmp_path / "r" / "model", ["--task.num_beams=3"])
    assert mt("one two three")["translation"] == "eins zwei drei"


@pytest.mark.slow
def test_chinese_summaries_learn(tmp_path):
    s = finetune("summarization", str(FIX / "summ_train.jsonl"), str(FIX / "summ_dev.jsonl"), out=str(tmp_path / "r"),
                 overrides=tiny(*SEQ, "--train.max_steps=300", "--train.eval_every_steps=150"))
    assert s["eval"]["tokenization"] == "cjk-characters" and s["eval"]["rougeL"] >= 60

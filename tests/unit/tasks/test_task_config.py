"""TaskConfig's sections: task.qa and task.seq2seq hold what only those tasks read; a flat key of
the older layout is an error naming its new place, and a task.json that stores one still loads."""

from dataclasses import fields

import pytest

from lmlab.config import from_dict, parse_overrides, to_dict
from lmlab.errors import ConfigError
from lmlab.tasks.evaluate import task_config_with
from lmlab.tasks.finetune import FinetuneConfig
from lmlab.tasks.task import QAConfig, Seq2SeqConfig, TaskConfig, nest_task_config
from lmlab.tasks.task_model import task_config

# what a task.json held before the sections (every field at the top level), as `to_dict` wrote it
FLAT = {"epochs": 2.0, "max_length": 64, "text_column": "", "label_column": "", "stride": 16,
        "max_answer_length": 20, "negative_windows": 0.5, "question_match": True, "answer_cues": False,
        "decode": "expected_f1", "sentence_match": True, "sentence_ranker": True, "max_target_length": 40,
        "num_beams": 4, "length_penalty": 0.8, "no_repeat_ngram_size": 3, "direction": "de-en", "lang": "en",
        "eval_max_examples": 7, "predict_batch_size": 3, "vocab_size": 99, "lowercase": True, "split_cjk": True,
        "vectors": "", "truncation": "middle", "group_by_length": True}


def test_every_old_field_has_one_place():
    nested = {f.name for f in fields(TaskConfig)} - {"qa", "seq2seq"}
    qa, s2s = {f.name for f in fields(QAConfig)}, {f.name for f in fields(Seq2SeqConfig)}
    assert nested | qa | s2s == set(FLAT) and not (nested & qa or nested & s2s or qa & s2s)


def test_an_old_flat_task_json_loads_as_the_nested_config():
    cfg = task_config({"task": "qa", "config": FLAT})
    assert cfg == TaskConfig(epochs=2.0, max_length=64, lang="en", eval_max_examples=7, predict_batch_size=3,
                             vocab_size=99, lowercase=True, truncation="middle", group_by_length=True,
                             qa=QAConfig(stride=16, max_answer_length=20, negative_windows=0.5, question_match=True,
                                         decode="expected_f1", sentence_match=True, sentence_ranker=True),
                             seq2seq=Seq2SeqConfig(max_target_length=40, num_beams=4, length_penalty=0.8,
                                                   no_repeat_ngram_size=3, direction="de-en", split_cjk=True))
    assert nest_task_config(to_dict(cfg)) == to_dict(cfg)  # a nested one is left as it is
    assert task_config({"task": "qa"}) == TaskConfig()


@pytest.mark.parametrize("flat, new", [("question_match", "task.qa.question_match"),
                                       ("num_beams", "task.seq2seq.num_beams")])
def test_a_flat_key_names_its_new_place(flat, new):
    with pytest.raises(ConfigError, match=rf"task\.{flat} is now {new.replace('.', chr(92) + '.')}"):
        task_config_with(TaskConfig(), [f"--task.{flat}=1"])
    with pytest.raises(ConfigError, match=rf"task\.{flat} is now {new.replace('.', chr(92) + '.')}"):
        from_dict(FinetuneConfig, parse_overrides([f"--task.{flat}=1"]))


def test_section_overrides_reach_their_fields():
    cfg = task_config_with(TaskConfig(), ["--task.qa.decode=expected_f1", "--task.seq2seq.num_beams=5",
                                          "--task.max_length=32"])
    assert (cfg.qa.decode, cfg.seq2seq.num_beams, cfg.max_length) == ("expected_f1", 5, 32)
    with pytest.raises(ConfigError, match="task.qa.sentence_match=true"):
        task_config_with(TaskConfig(), ["--task.qa.sentence_ranker=true"])
    with pytest.raises(ConfigError, match="unknown config key task.qa.num_beams"):
        task_config_with(TaskConfig(), ["--task.qa.num_beams=2"])

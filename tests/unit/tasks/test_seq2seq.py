"""Summarisation and translation: teacher forcing, readers, decoding through `lmlab.generate`
(equal to its beam search and to greedy by full recomputation), and a tiny model that learns."""

import math

import pytest
import torch

import lmlab
from lmlab.errors import DataError
from lmlab.generate import GenerationConfig, beam_search
from lmlab.model import Transformer, preset
from lmlab.tasks.finetune import finetune
from lmlab.tasks.seq2seq import Seq2SeqObjective
from lmlab.tasks.summarization import TASK as SUMM
from lmlab.tasks.task import Seq2SeqConfig, TaskConfig, train_task_tokenizer
from lmlab.tasks.translation import TASK as MT

from .conftest import FIX, assert_resumes_to_the_same_weights, tiny

SEQ = ["--model.d_model=64", "--model.d_ff=128", "--model.dropout=0", "--optim.lr=2e-3",
       "--optim.warmup_steps=30", "--task.vocab_size=300", "--task.max_length=48",
       "--task.seq2seq.max_target_length=24"]


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


SOURCES = ["one two three", "seven four five three eight nine", "two", "five one two three four", "eight eight"]


@pytest.fixture(scope="module")
def mt_tok(tmp_path_factory):
    pairs = MT.read(f"{FIX / 'mt_train.en'},{FIX / 'mt_train.de'}", TaskConfig())
    return train_task_tokenizer(MT, MT.texts(pairs), tmp_path_factory.mktemp("mt"), TaskConfig(vocab_size=300))


def random_seq2seq(tok, dropout=0.0):
    """Odd shapes (d_model 36, 3 heads); varied outputs (init_std 0.1); EOS made as likely as a
    token the model often predicts (its output row, scaled by 1.02), so rows end at different steps."""
    torch.manual_seed(0)
    model = Transformer(preset("transformer-tiny", vocab_size=tok.vocab_size, d_model=36, n_heads=3, n_layers=2,
                               d_ff=44, max_seq_len=40, dropout=dropout, init_std=0.1, tie_embeddings=False,
                               pad_token_id=tok.pad_id)).eval()
    with torch.no_grad():
        w = model.head.proj.weight
        w[tok.eos_id] = 1.02 * w[75]
    return model


def test_task_greedy_equals_full_recomputation(mt_tok):
    tok, bos, eos = mt_tok, mt_tok.bos_id, mt_tok.eos_id
    model = random_seq2seq(tok, dropout=0.3)
    # batches of 2, 2, 1: padded sources
    cfg = TaskConfig(predict_batch_size=2, seq2seq=Seq2SeqConfig(max_target_length=7))
    want, lengths = [], set()
    with torch.no_grad():
        for text in SOURCES:  # one source at a time, no cache: the whole decoder input every step
            src, out = torch.tensor([tok.encode(text)]), []
            for _ in range(cfg.seq2seq.max_target_length):
                nxt = int(model(src, decoder_input_ids=torch.tensor([[bos] + out])).logits[0, -1].argmax())
                if nxt == eos:
                    break
                out.append(nxt)
            lengths.add(len(out))
            want.append(tok.decode(out, skip_special_tokens=True).strip())
    assert len(lengths) > 1 and cfg.seq2seq.max_target_length in lengths  # rows stop on EOS and at the limit
    model.train()  # as inside a training run: dropout must be off while decoding, the mode kept
    assert MT.generate(model, tok, cfg, SOURCES) == want
    assert model.training


def test_task_beams_equal_generate_beam_search(mt_tok):
    tok, eos = mt_tok, mt_tok.eos_id
    model = random_seq2seq(tok)
    cfg = TaskConfig(predict_batch_size=3, seq2seq=Seq2SeqConfig(max_target_length=7, num_beams=3, length_penalty=0.6))
    gen = GenerationConfig(num_beams=3, length_penalty=0.6, max_new_tokens=7, temperature=0)
    want, ended = [], 0
    for text in SOURCES:  # alone: no padding in the reference
        h = beam_search(model, [tok.encode(text)], gen, [eos], decoder_start_id=tok.bos_id, pad_id=tok.pad_id)[0]
        ended += h.token_ids[-1] == eos
        want.append(tok.decode([t for t in h.token_ids if t != eos], skip_special_tokens=True).strip())
    assert 0 < ended < len(SOURCES)  # both finished and cut hypotheses
    assert MT.generate(model, tok, cfg, SOURCES) == want
    greedy = MT.generate(model, tok, TaskConfig(seq2seq=Seq2SeqConfig(max_target_length=7)), SOURCES)
    assert greedy != want  # the beams found something else than greedy


def test_task_passes_no_repeat_ngram_size_to_the_decoder(mt_tok):
    tok, eos = mt_tok, mt_tok.eos_id
    model = random_seq2seq(tok)
    changed = 0
    for beams in (1, 3):
        free = MT.generate(model, tok, TaskConfig(seq2seq=Seq2SeqConfig(max_target_length=12, num_beams=beams)),
                           SOURCES)
        cfg = TaskConfig(predict_batch_size=3,
                         seq2seq=Seq2SeqConfig(max_target_length=12, num_beams=beams, no_repeat_ngram_size=1))
        gen = GenerationConfig(num_beams=beams, max_new_tokens=12, temperature=0, no_repeat_ngram_size=1)
        want = []
        for text in SOURCES:
            h = beam_search(model, [tok.encode(text)], gen, [eos], decoder_start_id=tok.bos_id, pad_id=tok.pad_id)[0]
            want.append(tok.decode([t for t in h.token_ids if t != eos], skip_special_tokens=True).strip())
        assert MT.generate(model, tok, cfg, SOURCES) == want
        changed += free != want
    assert changed  # the blocking mattered


def test_translation_learns_and_beams(tmp_path):
    files = lambda split: f"{FIX / f'mt_{split}.en'},{FIX / f'mt_{split}.de'}"  # noqa: E731
    s = finetune("translation", files("train"), files("dev"), out=str(tmp_path / "r"),
                 overrides=tiny(*SEQ, "--train.max_steps=400", "--train.eval_every_steps=200"))
    assert s["eval"]["bleu"] >= 60 and "tok:13a" in s["eval"]["bleu_signature"]
    assert s["val_perplexity"] == pytest.approx(math.exp(s["val_loss"]))  # a per-token loss has one
    mt = lmlab.pipeline("translation", tmp_path / "r" / "model", ["--task.seq2seq.num_beams=3"])
    assert mt("one two three")["translation"] == "eins zwei drei"


@pytest.mark.slow
def test_chinese_summaries_learn(tmp_path):
    s = finetune("summarization", str(FIX / "summ_train.jsonl"), str(FIX / "summ_dev.jsonl"), out=str(tmp_path / "r"),
                 overrides=tiny(*SEQ, "--train.max_steps=300", "--train.eval_every_steps=150"))
    assert s["eval"]["tokenization"] == "cjk-characters" and s["eval"]["rougeL"] >= 60


def test_preempted_translation_run_resumes_to_the_same_model(tmp_path, monkeypatch):
    files = lambda split: f"{FIX / f'mt_{split}.en'},{FIX / f'mt_{split}.de'}"  # noqa: E731

    def run(out):
        return finetune("translation", files("train"), files("dev"), out=str(out),
                        overrides=tiny(*SEQ, "--train.max_steps=6", "--train.eval_every_steps=3"))
    assert_resumes_to_the_same_weights(run, tmp_path, monkeypatch, stop_at=4)


def test_a_copy_head_writes_names_it_has_barely_seen(tmp_path):
    """Titles that repeat a word of the source: "昨天XY去了P，ZW在家。" → "XY", with the four
    characters drawn from 300, so that each occurs in a training target about three times. A
    decoder cannot learn to write 300 characters from so few examples; a pointer-generator
    learns one thing, where to copy from, and writes names it never saw whole."""
    import json
    import random

    rng = random.Random(0)
    pool, places = [chr(0x4E00 + 61 * i) for i in range(300)], ["北京", "上海", "广州", "杭州", "南京"]

    def rows(n):
        out = []
        for _ in range(n):
            a, b, c, d = rng.sample(pool, 4)
            out.append({"dialogue": f"昨天{a}{b}去了{rng.choice(places)}，{c}{d}在家。", "summary": a + b})
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    (tmp_path / "train.jsonl").write_text(rows(400), encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(rows(24), encoding="utf-8")
    scores = {}
    for copy in (False, True):
        s = finetune("summarization", str(tmp_path / "train.jsonl"), str(tmp_path / "dev.jsonl"),
                     out=str(tmp_path / f"copy-{copy}"),
                     overrides=tiny(*SEQ, "--train.max_steps=150", "--train.eval_every_steps=150",
                                    "--task.seq2seq.split_cjk=true", "--task.vocab_size=1200",
                                    f"--model.copy={str(copy).lower()}"))
        scores[copy] = s["eval"]["rougeL"]
    assert scores[True] >= 80 and scores[False] <= 30, scores
    summarize = lmlab.pipeline("summarization", tmp_path / "copy-True" / "model")
    name = pool[5] + pool[7]
    assert summarize(f"昨天{name}去了北京，{pool[9]}{pool[11]}在家。")["summary"] == name
    # a copy head added to a model trained without one: the backbone loads, the head starts fresh
    s = finetune("summarization", str(tmp_path / "train.jsonl"), str(tmp_path / "dev.jsonl"),
                 init=str(tmp_path / "copy-False" / "model"), out=str(tmp_path / "added"),
                 overrides=[o for o in tiny(*SEQ, "--train.max_steps=2") if not o.startswith("--model.")]
                 + ["--model.copy=true"])
    assert json.loads((tmp_path / "added" / "model" / "model.json").read_text())["copy"] is True
    assert s["new_tensors"] and all(k.startswith("pointer.") for k in s["new_tensors"])

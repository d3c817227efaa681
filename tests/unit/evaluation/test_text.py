"""ROUGE, BLEU and chrF: rouge-score and sacrebleu are the oracles; Chinese ROUGE by character."""

import pytest

rouge_score = pytest.importorskip("rouge_score")
sacrebleu = pytest.importorskip("sacrebleu")

from rouge_score import rouge_scorer  # noqa: E402

from lmlab.errors import DataError  # noqa: E402
from lmlab.evaluation.text import CharTokenizer, bleu, rouge  # noqa: E402


def test_default_rouge_tokenizer_scores_chinese_zero():
    default = rouge_scorer.RougeScorer(["rouge1", "rougeL"])
    s = default.score("我爱北京天安门", "我爱北京天安门")  # identical texts
    assert s["rouge1"].fmeasure == 0.0 and s["rougeL"].fmeasure == 0.0
    ours = rouge(["我爱北京天安门"], ["我爱北京天安门"])
    assert ours["rouge1"] == 100.0 and ours["rougeL"] == 100.0 and ours["tokenization"] == "cjk-characters"


def test_chinese_rouge_by_hand():
    # ref 7 chars, pred 我爱北京 4 chars all in ref: R1 P=1 R=4/7 → F=8/11; bigrams 3 of pred 3, ref 6
    r = rouge(["我爱北京"], ["我爱北京天安门"], lang="zh")
    assert r["rouge1"] == pytest.approx(100 * 8 / 11)
    assert r["rouge2"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    assert CharTokenizer().tokenize("GPT-4模型 2024年") == ["gpt", "4", "模", "型", "2024", "年"]


def test_english_rouge_equals_rouge_score_with_stemmer():
    preds = ["the cats were sitting on mats", "a quick brown fox"]
    refs = ["the cat sat on the mat", "the quick brown fox jumps"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    want = [scorer.score(r, p) for p, r in zip(preds, refs)]
    got = rouge(preds, refs)
    for t in ("rouge1", "rouge2", "rougeL"):
        assert got[t] == pytest.approx(100 * sum(w[t].fmeasure for w in want) / 2)


def test_multiple_references_take_the_best():
    one = rouge(["the cat sat"], [["a dog ran far away"]])["rouge1"]
    both = rouge(["the cat sat"], [["a dog ran far away", "the cat sat"]])["rouge1"]
    assert one == 0.0 and both == 100.0


def test_bleu_equals_sacrebleu_and_names_its_tokenizer():
    preds = ["the cat is on the mat", "there is a dog here"]
    refs = ["the cat sat on the mat", "a dog is here"]
    got = bleu(preds, refs)
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    assert "tok:13a" in got["bleu_signature"]
    zh = bleu(["我爱北京"], ["我爱北京天安门"])
    assert "tok:zh" in zh["bleu_signature"]
    assert zh["bleu"] == pytest.approx(sacrebleu.corpus_bleu(["我爱北京"], [["我爱北京天安门"]], tokenize="zh").score)
    assert zh["bleu"] > 40  # all 4 n-gram precisions are 1; only the brevity penalty


def test_bad_inputs():
    with pytest.raises(DataError, match="2 predictions but 1"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(DataError, match="no predictions"):
        bleu([], [])

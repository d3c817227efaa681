"""Classification metrics against confusion matrices computed by hand."""

import pytest

from lmlab.errors import DataError
from lmlab.evaluation.classification import classification_report, confusion_matrix, plot_confusion_matrix


def test_three_classes_by_hand():
    # gold: a a a b b c ; pred: a b a b c c
    gold = [0, 0, 0, 1, 1, 2]
    pred = [0, 1, 0, 1, 2, 2]
    r = classification_report(gold, pred, ["a", "b", "c"])
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    # a: TP 2 FP 0 FN 1 → P 1, R 2/3, F 0.8 ; b: TP 1 FP 1 FN 1 → .5 .5 .5 ; c: TP 1 FP 1 FN 0 → .5 1 2/3
    assert r["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert r["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["precision_macro"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert r["f1_micro"] == pytest.approx(4 / 6)  # single-label: micro = accuracy
    assert r["f1"] == r["f1_macro"] and r["average"] == "macro"


def test_binary_reports_the_positive_class():
    gold = [1, 1, 1, 0, 0, 0, 0]
    pred = [1, 0, 1, 1, 0, 0, 0]  # TP 2, FN 1, FP 1, TN 3
    r = classification_report(gold, pred, ["neg", "pos"])
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert r["per_class"]["neg"]["precision"] == pytest.approx(3 / 4)
    assert r["accuracy"] == pytest.approx(5 / 7)


def test_zero_division_is_zero_not_nan():
    r = classification_report([0, 0], [0, 0], ["x", "y"])  # class y never gold nor predicted
    assert r["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_bad_inputs():
    with pytest.raises(DataError, match="2 gold labels but 1"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(DataError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 2)
    with pytest.raises(DataError, match="no examples"):
        classification_report([], [], ["a"])


def test_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_confusion_matrix([[3, 1], [0, 2]], ["neg", "pos"], tmp_path / "cm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

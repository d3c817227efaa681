"""Classification metrics: accuracy, precision/recall/F1 per class, macro and micro
averages, and the confusion matrix (rows = gold label, columns = predicted label), also as a PNG.

For a class c with true positives TP, false positives FP and false negatives FN:
    precision = TP / (TP + FP),  recall = TP / (TP + FN),  F1 = 2·P·R / (P + R)
    (0 when a denominator is 0, as scikit-learn's ``zero_division=0``)
    macro = unweighted mean over classes; micro = the same formulas on summed TP/FP/FN
    (for single-label classification micro P = micro R = micro F1 = accuracy).
The top-level ``precision``/``recall``/``f1`` keys are those of the positive class (the second
label) for a binary task, as ``sklearn.metrics.f1_score(average="binary")``, and the macro
averages otherwise; ``f1_macro`` etc. are always present.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from lmlab.errors import DataError


def confusion_matrix(gold: Sequence[int], pred: Sequence[int], n_classes: int) -> list[list[int]]:
    """[n_classes][n_classes] counts, m[g][p] = examples of gold class g predicted as p."""
    if len(gold) != len(pred):
        raise DataError(f"{len(gold)} gold labels but {len(pred)} predictions")
    m = [[0] * n_classes for _ in range(n_classes)]
    for g, p in zip(gold, pred):
        if not (0 <= g < n_classes and 0 <= p < n_classes):
            raise DataError(f"label id {g if not 0 <= g < n_classes else p} is outside 0..{n_classes - 1}")
        m[g][p] += 1
    return m


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def classification_report(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Every metric of the module docstring, from label ids and the label names (id order)."""
    if not gold:
        raise DataError("no examples to evaluate")
    k = len(labels)
    m = confusion_matrix(gold, pred, k)
    per_class, sums = {}, [0, 0, 0]
    for c, name in enumerate(labels):
        tp = m[c][c]
        fp = sum(m[g][c] for g in range(k)) - tp
        fn = sum(m[c]) - tp
        p, r, f = _prf(tp, fp, fn)
        per_class[name] = {"precision": p, "recall": r, "f1": f, "support": sum(m[c])}
        sums = [sums[0] + tp, sums[1] + fp, sums[2] + fn]
    macro = [sum(v[key] for v in per_class.values()) / k for key in ("precision", "recall", "f1")]
    micro = _prf(*sums)
    accuracy = sum(m[c][c] for c in range(k)) / len(gold)
    top = ([per_class[labels[1]][key] for key in ("precision", "recall", "f1")] if k == 2 else macro)
    return {
        "accuracy": accuracy, "precision": top[0], "recall": top[1], "f1": top[2],
        "average": f"binary (positive class {labels[1]!r})" if k == 2 else "macro",
        "precision_macro": macro[0], "recall_macro": macro[1], "f1_macro": macro[2],
        "precision_micro": micro[0], "recall_micro": micro[1], "f1_micro": micro[2],
        "per_class": per_class, "labels": list(labels), "confusion_matrix": m, "examples": len(gold),
    }


def plot_confusion_matrix(matrix: list[list[int]], labels: Sequence[str], out_png: str | Path,
                          title: str = "") -> Path | None:
    """The matrix as a heat map with counts; None when matplotlib is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    top = max(max(row) for row in matrix) or 1
    for g in range(k):
        for p in range(k):
            ax.text(p, g, str(matrix[g][p]), ha="center", va="center",
                    color="white" if matrix[g][p] > top / 2 else "black")
    ax.set_title(title)
    with warnings.catch_warnings():  # labels in scripts the installed fonts lack still get their cells
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)

"""The quickstart's BERT and classifier across WordPiece draws, AdamW against Muon.

`tokenizers` trains WordPiece nondeterministically (huggingface/tokenizers#1794: ties broken in
hash-map order), so each quickstart run draws a slightly different vocabulary. This trains N
vocabularies on the quickstart's cleaned corpus, then its `bert` and `classifier` stages on each,
once per optimiser, and prints one JSON line per run: the BERT's validation loss and the
classifier's accuracy and macro F1 (a collapsed classifier predicts the majority class: accuracy
0.878, macro F1 0.468).

    python benchmarks/bench_quickstart.py --draws 4 --threads 1    # ≈ 3.5 min a draw on one thread
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch

from lmlab.machine import header
from lmlab.quickstart import bert_stage, builtin_corpus, classifier, wordpiece

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--optims", default="adamw,muon")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="cap both stages (a smoke run); 0 = the quickstart's")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench-quickstart"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(header(), flush=True)
    root = Path(a.out)
    if not (root / "corpus").exists():
        builtin_corpus(root)
    for d in range(a.draws):
        tok = root / f"tokenizer-{d}"
        if not tok.exists():
            wordpiece(root / "corpus", tok)
        vocab = hashlib.sha256((tok / "tokenizer.json").read_bytes()).hexdigest()[:8]
        for optim in a.optims.split(","):
            run = root / f"draw{d}-{optim}"
            shutil.rmtree(run, ignore_errors=True)
            torch.manual_seed(0)  # as the quickstart: only the vocabulary differs between draws
            bert = bert_stage(run, root / "corpus", tok, a.steps, optim, (f"--train.threads={a.threads}",))
            c = classifier(run, a.steps, root / "raw")
            print(json.dumps({"draw": d, "vocabulary": vocab, "optim": optim,
                              "bert_val_loss": round(bert["val_loss"], 3), "accuracy": round(c["accuracy"], 4),
                              "f1_macro": round(c["f1_macro"], 4)}), flush=True)


if __name__ == "__main__":
    main()

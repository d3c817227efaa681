"""Tokenisation + sharding throughput against calling Hugging Face `tokenizers` directly.

    python benchmarks/bench_tokenize.py --kind bpe --vocab-size 16000 --repeats 2

Builds (once, under --tmp) a cleaned corpus of the IMDB unlabeled reviews plus the four
Chinese novels and a tokenizer trained on part of it. Then, alternating in the same process
so that machine load affects both alike, it times

* reference — read the same corpus JSONL shards, ``json.loads`` each line, and call
  ``tokenizers.Tokenizer.encode_batch_fast`` on batches of the same size, keeping the ids;
* lmlab — `shard_corpus`: the same reading and encoding, plus the uint16 arrays, document
  offsets, fsync, manifest hashes and the atomic commit.

It prints tokens/s of each (best of --repeats) and their ratio (lmlab ÷ reference).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def prepare(tmp: Path, data: Path, kind: str, vocab_size: int) -> tuple[Path, Path]:
    from lmlab.corpus.pipeline import clean_corpus
    from lmlab.tokenizer.train import train_tokenizer

    corpus, tok = tmp / "corpus", tmp / f"tok-{kind}-{vocab_size}"
    if not corpus.exists():
        clean_corpus([data / "imdb" / "aclImdb_unsup.tar.gz", data / "sidamingzhu"], corpus, workers=2,
                     overrides=["--read.doc_per=file", "--split.valid=0.01", "--shard_bytes=16000000"])
    if not tok.exists():
        train_tokenizer(corpus, tok, kind=kind, vocab_size=vocab_size, overrides=["--max_documents=20000"])
    return corpus, tok


def reference(corpus: Path, tok_dir: Path, batch: int) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    total = 0
    for f in sorted(corpus.glob("*-*.jsonl")):
        texts: list[str] = []
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                texts.append(json.loads(line)["text"])
                if len(texts) == batch:
                    total += sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))
                    texts = []
        if texts:
            total += sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="bpe")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    from lmlab.machine import header

    print(header(), flush=True)
    from lmlab.data.shards import shard_corpus

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-tok-"))
    tmp.mkdir(parents=True, exist_ok=True)
    corpus, tok = prepare(tmp, Path(args.data), args.kind, args.vocab_size)
    corpus_mb = sum(p.stat().st_size for p in corpus.glob("*-*.jsonl")) / 1e6
    best_ref, best_ours, tokens = float("inf"), float("inf"), 0
    for r in range(args.repeats):
        t0 = time.perf_counter()
        ref_tokens = reference(corpus, tok, args.batch)
        best_ref = min(best_ref, time.perf_counter() - t0)
        out = tmp / "shards"
        t0 = time.perf_counter()
        summary = shard_corpus(corpus, tok, out,
                               overrides=[f"--shard.batch_documents={args.batch}", "--shard.separator=false"],
                               overwrite=True)
        best_ours = min(best_ours, time.perf_counter() - t0)
        tokens = sum(s["tokens"] for s in summary["splits"].values())
        assert tokens == ref_tokens, (tokens, ref_tokens)  # same work
        shutil.rmtree(out)
        print(f"repeat {r}: reference {ref_tokens / best_ref:,.0f} tok/s, lmlab {tokens / best_ours:,.0f} tok/s",
              file=sys.stderr)
    print(json.dumps({"kind": args.kind, "vocab_size": args.vocab_size, "corpus_mb": round(corpus_mb, 1),
                      "tokens": tokens, "reference_tokens_per_s": round(tokens / best_ref),
                      "lmlab_tokens_per_s": round(tokens / best_ours),
                      "reference_s": round(best_ref, 2), "lmlab_s": round(best_ours, 2),
                      "ratio": round(best_ref / best_ours, 3)}, indent=2))


if __name__ == "__main__":
    main()

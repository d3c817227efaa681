"""Cleaning throughput and peak memory on real text, at growing input sizes.

    python benchmarks/bench_corpus.py --sizes-mb 100 1000 --workers 2

Builds a base of real text from $LMLAB_DATA — the IMDB unlabeled reviews (a review per line),
the four classic Chinese novels (a paragraph per line) and the Tang/Song poems (a poem per
line) — then writes copies of it until each target size is reached. Every copy's lines get a
distinct prefix so that they are *not* duplicates: the deduplication index must grow with the
corpus, as it would on genuinely new text. Each size is cleaned by `clean_corpus` in a fresh
process; the figure is input MB/s and the peak RSS of the cleaning process and of its largest
worker (ru_maxrss). Flat memory means the peak does not grow with the input.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build_base(data: Path, path: Path) -> int:
    import lmlab.datasets as D

    with open(path, "w", encoding="utf-8") as f:
        for review in D.imdb_unsup(data):
            f.write(review.replace("\n", " ") + "\n")
        for novel in D.sidamingzhu(data):
            for para in novel.text.split("\n"):
                if para.strip():
                    f.write(para.strip() + "\n")
        for coll in ("quantangshi", "songci"):
            for poem in D.chinese_poetry(coll, data):
                f.write("".join(poem.paragraphs) + "\n")
    return path.stat().st_size


def make_input(base: Path, folder: Path, target_bytes: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    size, k = 0, 0
    base_lines = base.read_text(encoding="utf-8").splitlines()
    while size < target_bytes:
        out = folder / f"part-{k:03d}.txt"
        with open(out, "w", encoding="utf-8") as f:
            for line in base_lines:
                f.write(f"[copy {k}] {line}\n")
                size += len(line.encode()) + 10
                if size >= target_bytes:
                    break
        k += 1
    return sum(p.stat().st_size for p in folder.iterdir())


def run_one(inputs: Path, out: Path, workers: int, near: bool) -> dict:
    """Clean in this (fresh) process; report throughput and peak memory."""
    from lmlab.corpus.pipeline import clean_corpus

    t0 = time.perf_counter()
    over = ["--split.valid=0.01"] + (["--dedup.near=true"] if near else [])
    summary = clean_corpus([inputs], out, workers=workers, overrides=over, overwrite=True)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in inputs.iterdir())
    return {"input_mb": round(size / 1e6, 1), "seconds": round(seconds, 1),
            "mb_per_s": round(size / 1e6 / seconds, 2),
            "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_rss_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "documents_in": summary["documents_in"], "documents_out": summary["documents_out"],
            "workers": workers, "near_dedup": near}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--near", action="store_true", help="also MinHash/LSH near-dedup")
    ap.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), Path(args.child[1]), args.workers, args.near)))
        return
    from lmlab.machine import header

    print(header(), flush=True)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-corpus-"))
    base = tmp / "base.txt"
    if not base.exists():
        print(f"base text: {build_base(Path(args.data), base) / 1e6:.1f} MB", file=sys.stderr)
    results = []
    for mb in args.sizes_mb:
        folder = tmp / f"in-{mb}"
        if not folder.exists():
            make_input(base, folder, mb * 10**6)
        cmd = [sys.executable, __file__, "--child", str(folder), str(tmp / f"out-{mb}"), "--workers", str(args.workers)]
        cmd += ["--near"] if args.near else []
        child = subprocess.run(cmd, check=True, capture_output=True, text=True)
        res = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(res), flush=True)
        results.append(res)
        shutil.rmtree(tmp / f"out-{mb}", ignore_errors=True)
    print(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()

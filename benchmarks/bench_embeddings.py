"""Word-embedding benchmark: lmlab Word2Vec (wrapping gensim) against gensim itself, and lmlab
GloVe stage by stage, on the IMDB unlabeled reviews, with analogy and similarity scores.

    python benchmarks/bench_embeddings.py --max-words 2000000 --json out/bench_embeddings.json

Corpus: ``$LMLAB_DATA/imdb/aclImdb_unsup.tar.gz`` (50,000 reviews, ~11 M words), one review per
line, ``<br />`` replaced by a space, cut after ``--max-words`` whitespace words. Both Word2Vec
runs see the same tokens (lmlab's ``words`` tokenizer, lower-cased): gensim reads them from a
pre-tokenised file, so its time excludes tokenisation; lmlab's "train" time is the same gensim
call plus the per-epoch probe loss, and its total includes tokenisation.

Hyper-parameters (same for every tool): Word2Vec skip-gram, negative 5, window 5, min_count 5,
sample 1e-3, 5 epochs, size 100; GloVe window 10, min_count 5, x_max 10, α 0.75, 15 iterations,
size 100 (the settings the Stanford C reference is run with in BENCHMARKS.md). Evaluation: Google
analogies (3CosAdd and 3CosMul, restrict_vocab 30000) and WordSim-353 / SimLex-999 Spearman.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def prepare_imdb(data: Path, work: Path, max_words: int) -> Path:
    out = work / f"imdb-{max_words or 'all'}.txt"
    if out.exists():
        return out
    tar_path = data / "imdb" / "aclImdb_unsup.tar.gz"
    if not tar_path.exists():
        sys.exit(f"{tar_path}: not found (set LMLAB_DATA)")
    words = 0
    with tarfile.open(tar_path) as tar, open(out.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".txt"):
                continue
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
            text = " ".join(text.replace("<br />", " ").split())
            f.write(text + "\n")
            words += text.count(" ") + 1
            if max_words and words >= max_words:
                break
    out.with_suffix(".tmp").rename(out)
    return out


def evaluate(wv) -> dict:
    from lmlab.embeddings.evaluate import evaluate_analogies, evaluate_similarity

    g = evaluate_analogies(wv, "google", restrict_vocab=30000)
    return {
        "analogy_3cosadd": g["methods"]["3CosAdd"]["accuracy"],
        "analogy_3cosmul": g["methods"]["3CosMul"]["accuracy"],
        "analogy_coverage": g["coverage"],
        "wordsim353_spearman": evaluate_similarity(wv, "wordsim353")["spearman"],
        "simlex999_spearman": evaluate_similarity(wv, "simlex999")["spearman"],
    }


def bench_word2vec(corpus: Path, work: Path, threads: int, epochs: int, repeats: int = 1) -> dict:
    from gensim.models import Word2Vec

    from lmlab.embeddings.train import train_embeddings
    from lmlab.embeddings.vectors import WordVectors
    from lmlab.embeddings.vocab import make_tokenizer, read_lines

    # gensim: the same tokens, pre-tokenised
    tok_file = work / (corpus.stem + ".tok")
    if not tok_file.exists():
        tokenize = make_tokenizer("words")
        with open(tok_file, "w", encoding="utf-8") as f:
            for _, _, line in read_lines([corpus]):
                f.write(" ".join(tokenize([line])[0]) + "\n")
    params = dict(vector_size=100, window=5, min_count=5, sample=1e-3, sg=1, negative=5, hs=0,
                  workers=threads, seed=1)

    def run_gensim() -> tuple[float, float, object]:
        t0 = time.perf_counter()
        model = Word2Vec(**params)
        model.build_vocab(corpus_file=str(tok_file))
        t1 = time.perf_counter()
        model.train(corpus_file=str(tok_file), total_words=model.corpus_total_words, epochs=epochs,
                    total_examples=model.corpus_count)
        return t1 - t0, time.perf_counter() - t1, model

    def run_lmlab() -> tuple[float, float, dict]:
        t0 = time.perf_counter()
        stats = train_embeddings([str(corpus)], str(work / "w2v"), algo="word2vec", dim=100, window=5,
                                 min_count=5, epochs=epochs, threads=threads, seed=1, overwrite=True,
                                 progress=False)
        return time.perf_counter() - t0, stats["time_s"]["train"], stats

    # Alternate the order on a shared machine, report medians.
    g_runs, l_runs = [], []
    for r in range(repeats):
        for name in (("gensim", "lmlab") if r % 2 == 0 else ("lmlab", "gensim")):
            (g_runs if name == "gensim" else l_runs).append(run_gensim() if name == "gensim" else run_lmlab())
    model = g_runs[-1][2]
    stats = l_runs[-1][2]
    words = model.corpus_total_words
    g_vocab_s = float(np.median([r[0] for r in g_runs]))
    g_train = [round(r[1], 2) for r in g_runs]
    l_total = [round(r[0], 2) for r in l_runs]
    l_train = [round(r[1], 2) for r in l_runs]
    ref_wv = WordVectors(list(model.wv.index_to_key), model.wv.vectors)
    gensim_row = {"tool": "gensim 4 (corpus_file)", "vocab": len(ref_wv), "train_s_runs": g_train,
                  "train_s": float(np.median(g_train)), "total_s": round(g_vocab_s + float(np.median(g_train)), 2),
                  "words_per_s": round(words * epochs / float(np.median(g_train))), **evaluate(ref_wv)}
    wv = WordVectors.load(work / "w2v")
    lmlab_row = {"tool": "lmlab word2vec", "vocab": len(wv), "train_s_runs": l_train,
                 "train_s": float(np.median(l_train)), "total_s": float(np.median(l_total)),
                 "tokenize_s": stats["time_s"]["tokenize"],
                 "words_per_s": round(stats["tokens_kept"] * epochs / float(np.median(l_train))),
                 "loss_per_epoch": stats["loss_per_epoch"], **evaluate(wv)}
    return {"corpus_words": words, "repeats": repeats, "gensim": gensim_row, "lmlab": lmlab_row,
            "speed_ratio_train": round(gensim_row["train_s"] / lmlab_row["train_s"], 3),
            "speed_ratio_total": round(gensim_row["total_s"] / lmlab_row["total_s"], 3)}


def bench_glove(corpus: Path, work: Path, threads: int, epochs: int, memory_mb: int) -> dict:
    from lmlab.embeddings.train import train_embeddings
    from lmlab.embeddings.vectors import WordVectors

    out = work / "glove"
    t0 = time.perf_counter()
    stats = train_embeddings([str(corpus)], str(out), algo="glove", dim=100, window=10, min_count=5,
                             epochs=epochs, threads=threads, seed=1, overwrite=True, progress=False,
                             overrides=["--glove.x_max=10", f"--glove.memory_mb={memory_mb}"])
    total = time.perf_counter() - t0
    wv = WordVectors.load(out)
    return {"vocab": len(wv), "tokens": stats["tokens_kept"], "cooccurrences": stats["cooccurrences"],
            "runs_spilled": stats["runs_spilled"], "time_s": {**stats["time_s"], "wall": round(total, 2)},
            "updates_per_s": stats["updates_per_s"], "loss_per_epoch": stats["loss_per_epoch"], **evaluate(wv)}


def bench_stanford_glove(binary: Path, corpus: Path, work: Path, threads: int, epochs: int, memory_mb: int) -> dict:
    """Train Stanford's glove.c on exactly the co-occurrences lmlab counted and shuffled (same
    seed), so the training stage is compared on identical input; then evaluate its vectors."""
    import re
    import subprocess

    from lmlab.embeddings.glove import cooccurrence_triples, count_cooccurrences
    from lmlab.embeddings.vectors import WordVectors
    from lmlab.embeddings.vocab import VocabConfig, encode_corpus

    d = work / "stanford"
    d.mkdir(exist_ok=True)
    enc = encode_corpus([corpus], VocabConfig(min_count=5), d, progress=False)
    keys, vals, _ = count_cooccurrences(enc, 10, d, memory_mb)
    rows, cols, xs = cooccurrence_triples(keys, vals, len(enc.vocab), d, seed=1)
    crec = np.empty(len(rows), dtype=[("w1", "<i4"), ("w2", "<i4"), ("x", "<f8")])
    crec["w1"], crec["w2"], crec["x"] = rows + 1, cols + 1, xs  # glove.c ids start at 1
    crec.tofile(d / "cooccurrence.shuf.bin")
    del crec
    (d / "vocab.txt").write_text("".join(f"{w} {c}\n" for w, c in zip(enc.vocab.words, enc.vocab.counts)),
                                 encoding="utf-8")
    t0 = time.perf_counter()
    proc = subprocess.run([str(binary), "-input-file", str(d / "cooccurrence.shuf.bin"), "-vocab-file",
                           str(d / "vocab.txt"), "-save-file", str(d / "vectors"), "-vector-size", "100",
                           "-threads", str(threads), "-iter", str(epochs), "-x-max", "10", "-eta", "0.05",
                           "-alpha", "0.75", "-binary", "0", "-model", "2", "-seed", "1", "-verbose", "2"],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    costs = [float(c) for c in re.findall(r"cost: ([0-9.eE+-]+)", proc.stderr)]
    words, vecs = [], []
    for line in (d / "vectors.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        if parts[0] != "<unk>":
            words.append(parts[0])
            vecs.append(np.array(parts[1:], dtype=np.float32))
    wv = WordVectors(words, np.stack(vecs))
    return {"binary": str(binary), "cooccurrences": int(len(rows)), "train_wall_s": round(wall, 2),
            "updates_per_s": round(len(rows) * epochs / wall), "loss_per_epoch": costs, **evaluate(wv)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data",
                    default=os.environ.get("LMLAB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--max-words", type=int, default=0, help="cut the corpus after N words (0: all ~11 M)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--w2v-epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1, help="Word2Vec runs per tool (alternating; medians)")
    ap.add_argument("--glove-epochs", type=int, default=15)
    ap.add_argument("--glove-memory-mb", type=int, default=1024)
    ap.add_argument("--only", choices=["word2vec", "glove"], default=None)
    ap.add_argument("--stanford-glove", default=None,
                    help="path to a compiled Stanford glove.c binary: trained on lmlab's co-occurrences")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    from lmlab.machine import header

    print(header(), flush=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmlab-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = prepare_imdb(Path(args.data), work, args.max_words)
    results: dict = {"corpus": str(corpus), "max_words": args.max_words, "threads": args.threads,
                     "cpus": os.cpu_count()}
    if args.only in (None, "word2vec"):
        results["word2vec"] = bench_word2vec(corpus, work, args.threads, args.w2v_epochs, args.repeats)
        print(json.dumps(results["word2vec"], indent=2), flush=True)
    if args.only in (None, "glove"):
        results["glove"] = bench_glove(corpus, work, args.threads, args.glove_epochs, args.glove_memory_mb)
        print(json.dumps(results["glove"], indent=2), flush=True)
        if args.stanford_glove:
            results["stanford_glove"] = bench_stanford_glove(Path(args.stanford_glove), corpus, work, args.threads,
                                                             args.glove_epochs, args.glove_memory_mb)
            results["glove_train_speed_ratio"] = round(results["glove"]["updates_per_s"]
                                                       / results["stanford_glove"]["updates_per_s"], 3)
            print(json.dumps(results["stanford_glove"], indent=2), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

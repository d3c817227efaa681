"""The four applications end to end: pretraining (where a recipe needs it), fine-tuning,
evaluation on the development splits, one table; each figure next to the threshold its Bench names.

    python benchmarks/bench_tasks.py                   # every benchmark, full recipes (hours on 2 CPU cores)
    python benchmarks/bench_tasks.py sst2 cmrc2018     # some of them
    python benchmarks/bench_tasks.py sst2 --short 3000 # cap every run at 3000 optimizer steps (a smoke figure)
    python benchmarks/bench_tasks.py --list

Each benchmark is a chain of CLI calls (printed before it runs, so it can be reproduced by
hand); a finished stage is reused (the en-bert pretraining is shared by sst2 and squad; a
task's own pretraining on its training text, chnsenticorp's and cmrc2018's, is not).
chnsenticorp-ngram and sst2-ngram train the bag-of-n-grams classifier (`--model.preset=ngram`).
sst2-x3 and squad-x3 fine-tune the recipe with seeds 1337, 1 and 2 (runs sst2-s1337, ...) and
score the `lmlab ensemble` of the three.
The data come from $LMLAB_DATA. Results: out/bench-tasks/results.json
and a Markdown table on stdout, with the wall time of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "bench-tasks"

@dataclass
class Bench:
    task: str
    train: str
    eval: str
    recipe: str  # configs/finetune/RECIPE.yaml
    metric: str
    target: float | None
    pretrain: str | None = None  # configs/pretrain/NAME.yaml, shared by the benches that name it
    adapt: str | None = None  # configs/pretrain/NAME.yaml on the task's training text, continuing `pretrain`
    extra: tuple[str, ...] = ()  # fine-tuning overrides
    seeds: tuple[int, ...] = ()  # fine-tune once per seed (run RECIPE-sSEED), then `lmlab ensemble` the runs


BENCHES = {
    "sst2": Bench("sentiment", "sst2:train", "sst2:dev", "sst2", "accuracy", 0.86, pretrain="en-bert"),
    "chnsenticorp": Bench("sentiment", "chnsenticorp:train", "chnsenticorp:dev", "chnsenticorp", "accuracy", 0.90,
                          adapt="chnsenticorp-self"),
    "chnsenticorp-ngram": Bench("sentiment", "chnsenticorp:train", "chnsenticorp:dev", "chnsenticorp-ngram",
                                "accuracy", 0.90),
    "sst2-ngram": Bench("sentiment", "sst2:train", "sst2:dev", "sst2-ngram", "accuracy", 0.86),
    "cmrc2018": Bench("qa", "cmrc2018:train", "cmrc2018:trial", "cmrc2018", "f1", 55.0, adapt="cmrc2018-self"),
    "squad": Bench("qa", "squad:dev:0-29", "squad:dev:30-37", "squad", "f1", 40.0, pretrain="en-bert"),
    "sst2-x3": Bench("sentiment", "sst2:train", "sst2:dev", "sst2", "accuracy", 0.86, pretrain="en-bert",
                     seeds=(1337, 1, 2)),
    "squad-x3": Bench("qa", "squad:dev:0-29", "squad:dev:30-37", "squad", "f1", 40.0, pretrain="en-bert",
                      seeds=(1337, 1, 2)),
    "multi30k-en-de": Bench("translation", "multi30k:train", "multi30k:val", "multi30k", "bleu", 28.0,
                            extra=("--task.seq2seq.direction=en-de",)),
    "multi30k-de-en": Bench("translation", "multi30k:train", "multi30k:val", "multi30k", "bleu", 32.0,
                            extra=("--task.seq2seq.direction=de-en",)),
    "tatoeba-zh-en": Bench("translation", "tatoeba:train", "tatoeba:dev", "tatoeba", "bleu", None,
                           extra=("--task.seq2seq.direction=zh-en",)),
    "dialogsum": Bench("summarization", "dialogsum:train", "dialogsum:dev", "dialogsum", "rougeL", 25.0),
    "csl": Bench("summarization", "csl:dev:0-799", "csl:dev:800-999", "csl", "rougeL", None),
}
# Pretraining recipes that start from word vectors: IMDB skip-gram vectors, 128-d (= d_model).
PRETRAIN_VECTORS = {"en-bert": "imdb-w2v-128"}


def imdb_vectors(name: str, threads: int) -> Path:
    """Skip-gram vectors on the IMDB reviews (the corpus of benchmarks/bench_embeddings.py)."""
    out = OUT / name
    if not (out / "manifest.json").exists():
        from bench_embeddings import prepare_imdb

        text = prepare_imdb(Path(os.environ.get("LMLAB_DATA", ROOT.parent / "shared" / "data")), OUT, 0)
        run([sys.executable, "-m", "lmlab", "embed", "train", str(text), "--out", str(out), "--dim", "128",
             "--threads", str(threads), "--seed", "1"])
    return out


def run(cmd: list[str]) -> dict:
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    out = proc.stdout.strip()
    start = out.find("{")
    result = json.loads(out[start:]) if start >= 0 else {}
    result["wall_s"] = round(time.perf_counter() - t, 1)
    return result


def without_train_overlap(out: Path) -> str:
    """ChnSentiCorp dev minus the rows whose text occurs in train (a TSV the sentiment reader takes)."""
    from lmlab.datasets import chnsenticorp

    train = {r.text for r in chnsenticorp("train")}
    rows = [r for r in chnsenticorp("dev") if r.text not in train]
    path = out / "chnsenticorp-dev-minus-train.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{r.text}\t{['negative', 'positive'][r.label]}\n" for r in rows),
                    encoding="utf-8")
    print(f"chnsenticorp dev: {len(rows)} rows not in train", flush=True)
    return str(path)


def bench(name: str, short: int, threads: int) -> dict:
    b = BENCHES[name]
    cap = [f"--train.max_steps={short}"] if short else []
    common = [f"--train.threads={threads}", "--train.progress=false"]
    py = [sys.executable, "-m", "lmlab"]
    result = {"bench": name, "task": b.task, "metric": b.metric, "target": b.target, "short": short or None}
    init = []
    if b.pretrain:
        pre_out = OUT / f"pretrain-{b.pretrain}{'-short' if short else ''}"
        if not (pre_out / "model" / "manifest.json").exists():
            vectors = PRETRAIN_VECTORS.get(b.pretrain)
            more = [f"--init_vectors={imdb_vectors(vectors, threads)}"] if vectors else []
            r = run(py + ["pretrain", "--config", f"configs/pretrain/{b.pretrain}.yaml", "--out", str(pre_out)]
                    + common + more + cap)
            result["pretrain_wall_s"] = r["wall_s"]
        init = ["--init", str(pre_out / "model")]
    if b.adapt:
        ad_out = OUT / f"adapt-{name}{'-short' if short else ''}"
        if not (ad_out / "model" / "manifest.json").exists():
            r = run(py + ["pretrain", "--config", f"configs/pretrain/{b.adapt}.yaml", "--out", str(ad_out)]
                    + [f"--init={x}" for x in init[1:]] + common + cap)
            result["adapt_wall_s"] = r["wall_s"]
        init = ["--init", str(ad_out / "model")]
    run_out = OUT / f"{name}{'-short' if short else ''}"
    finetune = py + ["finetune", b.task, "--train", b.train, "--eval", b.eval, *init,
                     "--config", f"configs/finetune/{b.recipe}.yaml", *b.extra, *common, *cap]
    if b.seeds:
        members, values, wall = [], [], 0.0
        for seed in b.seeds:
            member = OUT / f"{b.recipe}-s{seed}{'-short' if short else ''}"
            if not (member / "summary.json").exists():
                wall += run(finetune + ["--out", str(member), f"--train.seed={seed}"])["wall_s"]
            summary = json.loads((member / "summary.json").read_text())
            members.append(str(member / "model"))
            values.append((summary.get("eval") or {}).get(b.metric))
        run(py + ["ensemble", b.task, *members, "--out", str(run_out / "model"), "--overwrite"])
        e = run(py + ["evaluate", b.task, str(run_out / "model"), "--data", b.eval])
        result.update(finetune_wall_s=round(wall, 1), members=dict(zip(b.seeds, values)), value=e.get(b.metric),
                      steps=None)
    else:
        r = run(finetune + ["--out", str(run_out)])
        result.update(finetune_wall_s=r["wall_s"], steps=r.get("steps"), early_stopped=r.get("early_stopped"),
                      value=(r.get("eval") or {}).get(b.metric))
    if b.task == "translation":
        e = run(py + ["evaluate", b.task, str(run_out / "model"), "--data", b.eval, *b.extra,
                      "--task.seq2seq.num_beams=5"])
        result.update(value_beam5=e["bleu"], signature=e["bleu_signature"])
    if name.startswith("chnsenticorp"):
        e = run(py + ["evaluate", b.task, str(run_out / "model"), "--data", without_train_overlap(OUT)])
        result["value_dev_minus_train"] = e["accuracy"]
    result["reached"] = None if b.target is None or result["value"] is None else result["value"] >= b.target
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"benchmarks (default: all): {', '.join(BENCHES)}")
    ap.add_argument("--short", type=int, default=0, help="cap every training run at this many steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        for k, b in BENCHES.items():
            print(f"{k:16} {b.task:14} {b.train:18} → {b.eval:16} target {b.metric} ≥ {b.target}")
        return
    from lmlab.machine import header

    print(header(), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    results = [bench(n, a.short, a.threads) for n in (a.names or list(BENCHES))]
    path = OUT / "results.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({r["bench"] + ("-short" if r["short"] else ""): r for r in results})
    path.write_text(json.dumps(old, indent=2) + "\n")
    print("\n| benchmark | metric | value | target | steps | fine-tune time |")
    print("|---|---|---|---|---|---|")
    for r in results:
        v = r["value"]
        print(f"| {r['bench']} | {r['metric']} | {v if v is None else round(v, 4)} | {r['target']} | {r['steps']} "
              f"| {r['finetune_wall_s']} s |")


if __name__ == "__main__":
    main()

"""The reliability checklist measured: fault and fuzz campaigns with real counts, one table.

    python benchmarks/bench_reliability.py [--quick] [--only A2,C1] [--skip-pytest] [--soak-minutes 30]

Campaigns (each bounded; `--quick` runs smaller counts):
    A1 A4 A5  a tiny `lmlab pretrain` killed with SIGKILL (or given ENOSPC) at a random file
              operation of its checkpoint writes and retention (the k-th write()/fsync/rename/
              rmtree under checkpoints/; a write is cut at a random byte), then resumed
    A2 B1     kill -9 of a `python -m lmlab pretrain` subprocess at a random step, resumed; and
              the uninterrupted run twice
    A3        truncation and one-byte flips of a committed checkpoint, then load_checkpoint
    A7        every stored format version (tests/fixtures/checkpoints/vN): logits and resumed losses vs golden
    B2 B3     resume at every step boundary 1..20; SIGKILL at micro-step 2 of 4 (accumulation)
    G4        SIGTERM of a training subprocess at a random step, resumed
    G3 G5 G2  2 gloo ranks of `lmlab pretrain`: NaN (or an inf gradient) on rank 1, SIGSTOP of one
              rank; every file operation of both ranks audited (and runs from an empty OUT)
    G1        torchrun --max-restarts=3 with one rank SIGKILLed at a random step, vs an uninterrupted run
    C1        ten pickle payloads handed to every lmlab load entry point
    C2        mutated safetensors headers through load_tensors, in a child process (crashes, RSS)
    D4        a clean 2,000-step tiny `lmlab pretrain` with losses ×10 at 5 random steps (spike=warn, skip)
    E3        `lmlab corpus clean` of a 512 MiB line with no newline: peak RSS, skipped and counted
    F6 F8     a real `lmlab serve` of a tiny model on 127.0.0.1: 10,000 fuzzed requests (F10 F13
              from the same server), then slow-loris and idle-connection exhaustion
    F12       soak: the F6 mix from 4 clients against a fresh server for --soak-minutes (default 2;
              the checklist's 30) after a warm-up; its RSS at the start, the max and the end
    H3        10,000 random strings: lmlab tokenizers vs transformers.AutoTokenizer on the same files
    I6        Word2Vec's update (gensim, through lmlab) vs the SGNS gradient from autograd (gensim's σ table)
    pytest    the tests that already measure an item, run once; their outcomes and figures
Every checklist id gets a row: measured (trials, failures, what was lost, by what) or the
reason it is not. The table is printed as Markdown and written to reports/reliability-bench.md
and .json. Processes that are killed on purpose are forked from this one after lmlab is
imported (a fork costs milliseconds, an interpreter start two seconds); A2 and G4 start real
`python -m lmlab` subprocesses. The campaigns are modules of benchmarks/reliability/ (its docstring:
how to add one).
"""

import argparse
import functools
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability.campaigns import ALIASES, CAMPAIGNS  # noqa: E402
from reliability.environment import REPORTS, warm_imports  # noqa: E402
from reliability.table import row, write_reports  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a few minutes)")
    parser.add_argument("--only", default="", help="campaigns to run, e.g. A2,C1 (aliases: A4 A5 → A1, "
                        "B1 G4 → A2, B3 → B2, F8 F10 F13 → F6, G2 G5 → G3); pytest runs the existing tests")
    parser.add_argument("--skip-pytest", action="store_true")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    parser.add_argument("--soak-minutes", type=float, default=None,
                        help="length of the F12 soak after its warm-up (default 2, --quick 0.5; the checklist's is 30)")
    args = parser.parse_args()
    campaigns = dict(CAMPAIGNS)
    if args.soak_minutes is not None:
        campaigns["F12"] = functools.partial(CAMPAIGNS["F12"], minutes=args.soak_minutes)
    selected = list(CAMPAIGNS)
    if args.only:
        selected = list(dict.fromkeys(ALIASES.get(x.strip(), x.strip()) for x in args.only.split(",") if x.strip()))
        unknown = [x for x in selected if x not in CAMPAIGNS]
        if unknown:
            parser.error(f"unknown campaigns {unknown}; choose from {', '.join(CAMPAIGNS)} (or {', '.join(ALIASES)})")
    if args.skip_pytest and "pytest" in selected:
        selected.remove("pytest")
    REPORTS.mkdir(exist_ok=True)
    warm_imports()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lmlab-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, times = [], {}
    for name in selected:
        t0 = time.monotonic()
        print(f"campaign {name} ...", file=sys.stderr, flush=True)
        try:
            rows += campaigns[name](work, args.quick)
        except Exception as e:  # a campaign that breaks is a row, not the end of the run
            traceback.print_exc()
            rows.append(row(name, 0, 1, f"the campaign itself failed: {type(e).__name__}: {e}", f"campaign {name}"))
        times[name] = round(time.monotonic() - t0, 1)
        print(f"campaign {name}: {times[name]} s", file=sys.stderr, flush=True)
    print(write_reports(rows, times, args.quick, args.only))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

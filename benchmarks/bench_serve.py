"""Serving throughput: requests/s and p50/p99 latency of `lmlab serve`, with and without dynamic batching.

32 concurrent clients (threads, one keep-alive connection each) issue short completions
(a ~6-token prompt, ``max_tokens`` 16, temperature 0.8, a seed per request) in a closed loop
for ``--seconds`` against a live server started as a subprocess (``python -m lmlab serve``,
uvicorn, 127.0.0.1). The same run measures ``--max-batch-size 1`` (no batching: requests are
decoded one after another) and ``--max-batch-size 32`` (dynamic batching), so the ratio is
taken on the same machine state. Every non-200 answer or transport error is counted.

The model is a randomly initialised GPT-2-family decoder (6 layers, d_model 384, 6 heads) with
a byte-level BPE tokenizer trained on the project's fixture (vocabulary ≈ 400, so the output
head is cheap; the figures are about the server, not the model). Random weights rarely emit
the end token, so nearly every request generates all 16 tokens.

    python benchmarks/bench_serve.py                 # 60 s per mode
    python benchmarks/bench_serve.py --seconds 20    # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "text" / "mixed.txt"


def build(work: Path) -> Path:
    import torch

    from lmlab.model import Transformer, preset, save_model
    from lmlab.tokenizer.train import train_tokenizer

    from lmlab.tokenizer.tokenizer import Tokenizer

    train_tokenizer(FIXTURE, work / "tok", kind="bpe", vocab_size=400, overrides=["--min_frequency=1"])
    vocab = Tokenizer.load(work / "tok").vocab_size  # exactly: ids past the tokenizer cannot be decoded
    torch.manual_seed(0)
    cfg = preset("gpt2-small", vocab_size=vocab, d_model=384, n_heads=6, n_layers=6, d_ff=1536, max_seq_len=128,
                 dropout=0.0, attn_dropout=0.0)
    save_model(Transformer(cfg).eval(), work / "gpt", tokenizer_dir=work / "tok")
    return work / "gpt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, batch: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "serve", str(model), "--port", str(port),
                             "--max-batch-size", str(batch), "--max-queue", "64"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def load(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    tokens = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            i = 0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/completions", json={"model": "gpt", "prompt": "The cat sat on the",
                                                        "max_tokens": max_tokens, "temperature": 0.8,
                                                        "seed": k * 100_000 + i})
                    ok = r.status_code == 200
                    n = r.json()["usage"]["completion_tokens"] if ok else 0
                except httpx.HTTPError as e:
                    ok, n, r = False, 0, e
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                        tokens[0] += n
                    else:
                        errors.append(str(getattr(r, "status_code", r)))
                i += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    return {"requests": len(lat), "errors": len(errors), "error_kinds": sorted(set(errors))[:5],
            "requests_per_s": len(lat) / wall, "tokens_per_s": tokens[0] / wall,
            "p50_ms": 1000 * pct(0.50), "p99_ms": 1000 * pct(0.99),
            "mean_ms": 1000 * statistics.fmean(lat) if lat else None, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32, help="max batch size of the batching run")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from lmlab.machine import header

    print(header(), flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build(Path(tmp))
        for name, batch in [("no batching (max_batch_size 1)", 1),
                            (f"dynamic batching (max_batch_size {a.batch})", a.batch)]:
            proc, url = start_server(model, batch)
            try:
                load(url, 4, 2, a.max_tokens)  # warm-up
                results[name] = load(url, a.clients, a.seconds, a.max_tokens)
            finally:
                proc.terminate()
                proc.wait(10)
            r = results[name]
            print(f"{name:40s} {r['requests_per_s']:7.2f} req/s  {r['tokens_per_s']:7.1f} tok/s  "
                  f"p50 {r['p50_ms']:7.0f} ms  p99 {r['p99_ms']:7.0f} ms  errors {r['errors']}  "
                  f"({r['requests']} requests)",
                  flush=True)
    names = list(results)
    speedup = results[names[1]]["requests_per_s"] / results[names[0]]["requests_per_s"]
    print(f"batching speed-up (requests/s): {speedup:.2f}x")
    print(json.dumps({"config": vars(a), "cpu_count": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
    main()

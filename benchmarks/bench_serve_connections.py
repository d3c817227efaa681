"""Connections that ask nothing: how long `lmlab serve` holds them, against plain uvicorn.

Three cases against a live server on 127.0.0.1 started as ``python -m lmlab serve`` (so with the
connection limits of `lmlab.serve.app.server_config`), and the first two against the same app
under plain ``uvicorn.run(app, timeout_keep_alive=5)`` as the reference, measured in the same run:

1. slow loris: a request head sent one byte per ``--trickle-s`` seconds — seconds until the
   server closes the connection (capped at ``--max-wait-s``; "held" when it never closed);
2. silent: a connection that sends nothing — seconds until closed (same cap);
3. flood: ``--flood`` idle connections opened at once (more than ``max_connections``), then
   ``GET /health`` every 0.5 s — the answers while the flood lasts and the seconds until a
   200 comes back.

The model is a tiny random GPT (the figures are about connections, not the model).

    python benchmarks/bench_serve_connections.py                 # 1 B/s trickle, 30 s cap
    python benchmarks/bench_serve_connections.py --max-wait-s 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "text" / "mixed.txt"
REFERENCE = """
import sys, uvicorn
from lmlab.serve.app import create_app
from lmlab.serve.registry import Registry
uvicorn.run(create_app(Registry.load([sys.argv[1]])), host="127.0.0.1", port=int(sys.argv[2]),
            log_level="warning", timeout_keep_alive=5)
"""


def build(work: Path) -> Path:
    import torch

    from lmlab.model import Transformer, preset, save_model
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.tokenizer.train import train_tokenizer

    train_tokenizer(FIXTURE, work / "tok", kind="bpe", vocab_size=400, overrides=["--min_frequency=1"])
    vocab = Tokenizer.load(work / "tok").vocab_size
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny", vocab_size=vocab, d_model=32, n_heads=2, n_layers=1, d_ff=64, max_seq_len=64)
    save_model(Transformer(cfg).eval(), work / "gpt", tokenizer_dir=work / "tok")
    return work / "gpt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        if health(port) == 200:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def health(port: int) -> int | str:
    """GET /health on a fresh connection: the status, or the transport error's name."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else "closed"
    except OSError as e:
        return type(e).__name__


def held_for(port: int, payload: bytes, every_s: float, max_wait_s: float) -> float | None:
    """Send `payload` a byte every `every_s` s; seconds until the server closed (None: still open)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setblocking(False)
        start, i = time.monotonic(), 0
        while time.monotonic() - start < max_wait_s:
            if i < len(payload):
                try:
                    s.send(payload[i:i + 1])
                    i += 1
                except OSError:
                    return time.monotonic() - start
            end = min(time.monotonic() + every_s, start + max_wait_s)
            while time.monotonic() < end:
                try:
                    if s.recv(4096) == b"":
                        return time.monotonic() - start
                except BlockingIOError:
                    time.sleep(0.02)
                except OSError:
                    return time.monotonic() - start
    return None


def flood(port: int, n: int, max_wait_s: float) -> dict:
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.3)
        start, answers = time.monotonic(), []
        while time.monotonic() - start < max_wait_s:
            code = health(port)
            answers.append(code)
            if code == 200:
                return {"connections": n, "answers": answers, "recovered_after_s": round(time.monotonic() - start, 1)}
            time.sleep(0.5)
        return {"connections": n, "answers": answers, "recovered_after_s": None}
    finally:
        for s in socks:
            s.close()


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trickle-s", type=float, default=1.0, help="seconds between the bytes of the slow head")
    ap.add_argument("--max-wait-s", type=float, default=30.0)
    ap.add_argument("--flood", type=int, default=600, help="idle connections opened at once")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch
    import uvicorn

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build(Path(tmp))
        servers = {"lmlab serve": lambda port: [sys.executable, "-m", "lmlab", "serve", str(model),
                                                "--port", str(port)],
                   "uvicorn.run (reference)": lambda port: [sys.executable, "-c", REFERENCE, str(model), str(port)]}
        for name, cmd in servers.items():
            port = free_port()
            proc = start(cmd(port), port)
            try:
                head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: {'a' * 64}\r\n\r\n".encode()
                r = {"slow_loris_closed_after_s": rounded(held_for(port, head, a.trickle_s, a.max_wait_s)),
                     "silent_closed_after_s": rounded(held_for(port, b"", 0.1, a.max_wait_s))}
                if name == "lmlab serve":
                    r["flood"] = flood(port, a.flood, a.max_wait_s)
                r["alive_after"] = health(port) == 200
                results[name] = r
            finally:
                proc.terminate()
                proc.wait(10)
            print(f"{name:26s} slow loris ({1 / a.trickle_s:g} B/s) closed after "
                  f"{r['slow_loris_closed_after_s'] or f'> {a.max_wait_s:g} (held)'} s; silent connection closed "
                  f"after {r['silent_closed_after_s'] or f'> {a.max_wait_s:g} (held)'} s"
                  + (f"; flood of {a.flood}: answers {sorted(set(map(str, r['flood']['answers'])))}, 200 again "
                     f"after {r['flood']['recovered_after_s']} s" if "flood" in r else "")
                  + f"; alive after: {r['alive_after']}", flush=True)
    print(json.dumps({"config": vars(a), "cpu": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count(), "torch": torch.__version__, "uvicorn": uvicorn.__version__,
                      "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()

"""A real `lmlab serve` of a tiny model on 127.0.0.1: the model, the server's start and stop, its RSS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from .environment import MIXED, ROOT

KEY = "sk-bench-0123456789abcdef"


def tiny_served_model(work: Path) -> Path:
    """A tiny GPT with a byte-level BPE tokenizer of the project's mixed en/zh fixture."""
    from lmlab.model import Transformer, preset, save_model
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.tokenizer.train import train_tokenizer

    model = work / "serve-model"
    if not model.exists():
        train_tokenizer(MIXED, work / "serve-tok", kind="bpe", vocab_size=400, overrides=["--min_frequency=1"])
        vocab = Tokenizer.load(work / "serve-tok").vocab_size
        torch.manual_seed(0)
        cfg = preset("gpt2-tiny", vocab_size=vocab, d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=256,
                     dropout=0.0, attn_dropout=0.0, init_std=0.3)
        save_model(Transformer(cfg).eval(), model, tokenizer_dir=work / "serve-tok")
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_server(work: Path, model: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    f = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "serve", f"tiny={model}", "--host", "127.0.0.1",
                             "--port", str(port), "--api-key", KEY, "--max-tokens", "64", *extra],
                            env=env, stdout=f, stderr=f)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"lmlab serve did not start: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; killed if it has not exited 20 s later."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

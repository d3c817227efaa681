"""A tiny GPT (d_model 36, 3 heads, vocab = the tokenizer's, ≈ 400) saved with a byte-level BPE tokenizer trained on the
project's mixed English/Chinese fixture, and live uvicorn servers on 127.0.0.1 (a free port,
run in a thread, shut down at the end)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import torch  # noqa: E402

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"
KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    from lmlab.model import Transformer, preset, save_model
    from lmlab.tokenizer.train import train_tokenizer

    root = tmp_path_factory.mktemp("serve")
    from lmlab.tokenizer.tokenizer import Tokenizer

    train_tokenizer(FIXTURE, root / "tok", kind="bpe", vocab_size=400, overrides=["--min_frequency=1"])
    vocab = Tokenizer.load(root / "tok").vocab_size  # a larger model vocabulary could sample undecodable ids
    torch.manual_seed(0)
    cfg = preset("gpt2-tiny", vocab_size=vocab, d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=256,
                 dropout=0.0, attn_dropout=0.0, init_std=0.3)
    save_model(Transformer(cfg).eval(), root / "tiny", tokenizer_dir=root / "tok")
    return root / "tiny"


@pytest.fixture(scope="session")
def registry(model_dir):
    from lmlab.serve.registry import Registry

    torch.set_num_threads(1)
    return Registry.load([str(model_dir)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(registry, **limits):
    """A uvicorn server on 127.0.0.1:<free port> for `registry`, configured as `lmlab serve` does;
    yields (base_url, app)."""
    import uvicorn

    from lmlab.serve.app import create_app, server_config
    from lmlab.serve.limits import ServeConfig

    config = ServeConfig(port=free_port(), **limits)
    app = create_app(registry, config)
    server = uvicorn.Server(server_config(app, config, log_level="warning"))  # as `lmlab serve` runs it
    port = config.port
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def server(registry):
    """The shared server: API key set, default limits."""
    with live_server(registry, api_key=KEY) as s:
        yield s


@pytest.fixture()
def slow_model(registry, monkeypatch):
    """Make every forward pass of the tiny model take ≥ `delay` seconds (set .delay)."""
    entry = next(iter(registry.entries.values()))
    model = entry.model
    original = model.forward
    state = {"delay": 0.02}

    def slow(*a, **kw):
        time.sleep(state["delay"])
        return original(*a, **kw)

    monkeypatch.setattr(model, "forward", slow)
    return state

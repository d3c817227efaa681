"""`lmlab viz attention|positions|embeddings`: files written, data equal to independent computations."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from lmlab.model import Transformer, preset, save_model
    from lmlab.tokenizer.train import train_tokenizer

    root = tmp_path_factory.mktemp("viz")
    train_tokenizer(FIXTURE, root / "tok", kind="bpe", vocab_size=300, overrides=["--min_frequency=1"])
    torch.manual_seed(1)
    cfg = preset("gpt2-tiny", vocab_size=303, d_model=20, n_heads=5, n_layers=3, d_ff=28, max_seq_len=40,
                 dropout=0.0, attn_dropout=0.0, init_std=0.3)
    save_model(Transformer(cfg).eval(), root / "m", tokenizer_dir=root / "tok")
    return root / "m"


def cjk_font_installed() -> bool:
    from lmlab.fonts import font_files

    return len(font_files()) > 1


def test_attention_command(model_dir, tmp_path):
    from lmlab.cli import main
    from lmlab.generate import load_for_generation

    text = "the cat 猫" if cjk_font_installed() else "the cat sat"
    assert main(["viz", "attention", str(model_dir), "--text", text, "--out", str(tmp_path / "a")]) == 0
    data = json.loads((tmp_path / "a" / "attention.json").read_text())
    pngs = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert pngs == ["layer00_self.png", "layer01_self.png", "layer02_self.png"]
    assert all((tmp_path / "a" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    model, tok = load_for_generation(model_dir)
    ids = tok.encode(text)
    assert data["token_ids"] == ids
    shown = [t for t in data["tokens"] if not t.startswith("(")]  # "(猫)": a later byte of 猫
    assert "".join(shown).replace("␣", " ") == text
    with torch.no_grad():
        ref = model(torch.tensor([ids]), output_attentions=True).attentions
    for layer, want in zip(data["layers"], ref):
        np.testing.assert_allclose(np.array(layer["weights"]), want["self"][0].numpy(), atol=1e-4)
    assert (tmp_path / "a" / "manifest.json").exists()


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert", "transformer"])
def test_bucketed_maps_equal_the_unpadded_ones(model_dir, family, monkeypatch):
    """The server's maps (input padded to a bucket length, the padding masked) are the maps of the
    text alone, and texts of every length run through a few input widths."""
    from lmlab.model import Transformer, preset
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.viz.attention import attention_maps

    tok = Tokenizer.load(model_dir / "tokenizer", verify_hashes=False)
    torch.manual_seed(2)
    model = Transformer(preset(f"{family}-tiny", vocab_size=303, d_model=20, n_heads=5, n_layers=2, d_ff=28,
                               max_seq_len=40, dropout=0.0, attn_dropout=0.0)).eval()
    widths = []
    original = model.forward if family != "transformer" else model.encode
    monkeypatch.setattr(model, "forward" if family != "transformer" else "encode",
                        lambda x, *a, **kw: widths.append(x.size(1)) or original(x, *a, **kw))
    lengths = set()
    for n in range(1, 16):
        text = " ".join(["the", "cat", "猫", "sat"][i % 4] for i in range(n))
        plain, bucketed = attention_maps(model, tok, text), attention_maps(model, tok, text, bucket=True)
        lengths.add(len(plain.token_ids))
        assert bucketed.token_ids == plain.token_ids and len(bucketed.maps) == len(plain.maps) == 2
        for a, b in zip(plain.maps, bucketed.maps):
            assert a["weights"].shape == b["weights"].shape == (5, len(plain.token_ids), len(plain.token_ids))
            np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-6)
    assert len(set(widths[1::2])) <= 8 < len(lengths)  # the bucketed runs' widths; the lengths are more


@pytest.mark.skipif(not cjk_font_installed(), reason="no CJK font installed (apt-get install fonts-noto-cjk)")
def test_cjk_labels_have_glyphs():
    from lmlab.fonts import font_files, plot_fonts, uncovered

    families = plot_fonts("猫坐在垫子上")
    assert len(families) == 2
    assert uncovered("猫坐在垫子上", [f for _, f in font_files()]) == []
    assert uncovered("猫", [font_files()[0][1]]) == ["猫"]  # DejaVu alone would draw a box


def test_positions_command(tmp_path):
    from lmlab.cli import main
    from lmlab.model.position import sinusoidal_table

    assert main(["viz", "positions", "--d-model", "14", "--max-len", "23", "--out", str(tmp_path / "p")]) == 0
    data = json.loads((tmp_path / "p" / "positions.json").read_text())
    pe = sinusoidal_table(23, 14).double().numpy()
    k = np.arange(23)
    omega = 1 / 10000 ** (np.arange(0, 14, 2) / 14)
    closed = np.cos(k[:, None] * omega).sum(1)  # Σ_i cos(k ω_i): sin·sin + cos·cos = cos(difference)
    np.testing.assert_allclose(data["at_0"], pe @ pe[0], atol=1e-9)
    np.testing.assert_allclose(data["at_0"], closed, atol=1e-5)
    np.testing.assert_allclose(data["mean"], closed, atol=1e-5)  # independent of the start position
    assert data["at_0"][0] == pytest.approx(7.0, abs=1e-5)  # d/2 at distance 0
    for name in ("pe_matrix.png", "dot_by_distance.png"):
        assert (tmp_path / "p" / name).read_bytes()[:4] == b"\x89PNG"
    assert main(["viz", "positions", "--d-model", "15", "--max-len", "23", "--out", str(tmp_path / "q")]) == 2
    assert not (tmp_path / "q").exists()


def test_embeddings_command(model_dir, tmp_path):
    from lmlab.cli import main
    from lmlab.generate import load_for_generation

    assert main(["viz", "embeddings", str(model_dir), "--out", str(tmp_path / "e"), "--top", "10"]) == 0
    data = json.loads((tmp_path / "e" / "embeddings.json").read_text())
    model, tok = load_for_generation(model_dir)
    e = model.embed.tokens.weight.detach().double().numpy()[: tok.vocab_size]
    e = e - e.mean(0)
    evals = np.linalg.eigvalsh(e.T @ e)[::-1]  # covariance eigenvalues: an independent route to PCA
    np.testing.assert_allclose(data["explained_variance"], evals[:2] / evals.sum(), rtol=1e-6)
    xy = np.array([[p["x"], p["y"]] for p in data["points"]])
    assert len(xy) == tok.vocab_size
    np.testing.assert_allclose(xy.var(0) * len(xy), evals[:2], rtol=1e-6)
    assert (tmp_path / "e" / "embeddings.png").read_bytes()[:4] == b"\x89PNG"

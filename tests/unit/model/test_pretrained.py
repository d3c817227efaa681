"""Model directories: round trip, truncated or bit-flipped files refused, config/weights mismatch naming the field."""

import json
import random

import pytest
import torch

from lmlab.artifacts import read_manifest
from lmlab.errors import ArtifactCorrupt, ArtifactError, CheckpointMismatch, ConfigError
from lmlab.model import Transformer, load_model, preset, save_model


@pytest.fixture
def saved(tmp_path):
    model = Transformer(preset("gpt2-tiny", vocab_size=99, d_model=36, n_heads=3, n_layers=2, max_seq_len=32))
    save_model(model, tmp_path / "m")
    return model, tmp_path / "m"


def test_round_trip_is_exact(saved):
    model, path = saved
    loaded = load_model(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_manifest(path)["kind"] == "lmlab-model"


def test_tied_weights_are_stored_once(saved):
    from safetensors import safe_open

    _, path = saved
    with safe_open(path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert "embed.tokens.weight" in keys and not any("head" in k for k in keys)


def test_existing_output_is_not_overwritten(saved, tmp_path):
    model, path = saved
    with pytest.raises(ArtifactError, match="--overwrite"):
        save_model(model, path)
    save_model(model, path, overwrite=True)
    load_model(path)


def test_truncation_and_bit_flips_raise_typed_errors(saved, tmp_path, figure):
    _, path = saved
    original = (path / "model.safetensors").read_bytes()
    rng = random.Random(0)
    typed = 0
    trials = 40
    for trial in range(trials):
        data = bytearray(original)
        pos = rng.randrange(len(data))
        if trial % 2:
            data = data[:pos]
        else:
            data[pos] ^= 0xFF
        (path / "model.safetensors").write_bytes(bytes(data))
        with pytest.raises(ArtifactCorrupt):
            load_model(path)
        typed += 1
        # without hash verification, the safetensors parser must still fail cleanly or load
        try:
            load_model(path, verify_hashes=False)
        except (ArtifactCorrupt, CheckpointMismatch):
            pass
    figure(typed_error_rate=typed / trials)


def test_missing_manifest_means_incomplete(saved):
    _, path = saved
    (path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="not a complete"):
        load_model(path)


def test_config_disagreeing_with_weights_names_the_field(saved):
    _, path = saved
    cfg = json.loads((path / "model.json").read_text())
    cfg["vocab_size"] = 100
    (path / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatch, match="vocab_size"):
        load_model(path, verify_hashes=False)


def test_unknown_config_key_is_rejected(saved):
    _, path = saved
    cfg = json.loads((path / "model.json").read_text())
    cfg["n_layer"] = 2
    (path / "model.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="n_layer"):
        load_model(path, verify_hashes=False)

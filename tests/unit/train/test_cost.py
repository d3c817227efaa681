"""The cost sheet against closed forms."""

import pytest

from lmlab.errors import ConfigError
from lmlab.model.config import preset
from lmlab.train.cost import estimate_cost, memory_bytes


def test_gpt2_base_on_an_a100():
    sheet = estimate_cost("gpt2-base", tokens=10e9, seq_len=1024, device="a100", precision="bf16", mfu=0.5,
                          price_per_hour=2.0)
    n = sheet["parameters"]
    assert n == 124_439_808
    # 6·N_matmul·D + attention, within a few percent of the 6·N·D rule for this size
    assert sheet["total_flops"] == pytest.approx(6 * n * 10e9, rel=0.15)
    assert sheet["hours"] == pytest.approx(sheet["total_flops"] / (312e12 * 0.5) / 3600)
    assert sheet["cost"] == pytest.approx(sheet["hours"] * 2.0)
    assert sheet["chinchilla"]["tokens_per_parameter"] == pytest.approx(10e9 / n)
    assert sheet["chinchilla"]["compute_optimal_tokens"] == pytest.approx(20 * sheet["chinchilla"]["compute_optimal_parameters"], rel=1e-6)


def test_memory_is_16_bytes_per_parameter_plus_activations():
    cfg = preset("gpt2-small")
    mem = memory_bytes(cfg, 8, 256, "bf16")
    n = mem["weights"] // 4
    assert mem["gradients"] == 4 * n and mem["optimizer"] == 8 * n
    ckpt = memory_bytes(cfg, 8, 256, "bf16", activation_checkpointing=True)
    assert ckpt["activations"] < mem["activations"]


def test_unknown_device_is_named():
    with pytest.raises(ConfigError, match="unknown device 'tpu9'"):
        estimate_cost("gpt2-tiny", device="tpu9")

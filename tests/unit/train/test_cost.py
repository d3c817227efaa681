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
    assert sheet["chinchilla"]["compute_optimal_tokens"] == pytest.approx(
        20 * sheet["chinchilla"]["compute_optimal_parameters"], rel=1e-6)


def test_memory_is_16_bytes_per_parameter_plus_activations():
    cfg = preset("gpt2-small")
    mem = memory_bytes(cfg, 8, 256, "bf16")
    n = mem["weights"] // 4
    assert mem["gradients"] == 4 * n and mem["optimizer"] == 8 * n
    ckpt = memory_bytes(cfg, 8, 256, "bf16", activation_checkpointing=True)
    assert ckpt["activations"] < mem["activations"]


def test_muon_keeps_one_momentum_per_hidden_matrix_entry():
    from lmlab.model.summary import count_parameters

    cfg = preset("gpt2-small")
    adamw, muon = memory_bytes(cfg, 8, 256, "bf16"), memory_bytes(cfg, 8, 256, "bf16", optimizer="muon")
    p = count_parameters(cfg)
    assert adamw["optimizer"] - muon["optimizer"] == 4 * p["non_embedding_parameters"]
    sheet = estimate_cost("gpt2-tiny", device="a100", optimizer="muon")
    assert sheet["optimizer"] == "muon"
    with pytest.raises(ConfigError, match="optimizer: unknown 'sgd'"):
        estimate_cost("gpt2-tiny", device="a100", optimizer="sgd")


def test_profile_times_the_optimizer_the_training_uses(monkeypatch):
    import lmlab.train.optim as optim
    from lmlab.train.cost import profile_step

    built = []
    real = optim.build_optimizer
    monkeypatch.setattr(optim, "build_optimizer", lambda model, cfg: built.append(real(model, cfg)) or built[-1])
    cfg = preset("gpt2-tiny", vocab_size=99, d_model=32, n_heads=2, d_ff=64, max_seq_len=16)
    got = profile_step(cfg, 3, 7, "fp32", reps=1, optimizer="muon")
    assert got["optimizer_s"] > 0 and built and all(isinstance(o, optim.MuonAdamW) for o in built)


def test_unknown_device_is_named():
    with pytest.raises(ConfigError, match="unknown device 'tpu9'"):
        estimate_cost("gpt2-tiny", device="tpu9")


def test_profiled_steps_extrapolate_layer_by_layer():
    from lmlab.train.cost import extrapolate

    # 1 layer: 0.3 s forward+backward, 0.05 s AdamW; each further layer adds 0.2 s and 0.01 s
    got = extrapolate([0.3, 0.5], [0.05, 0.06], layers=6, batch_scale=2.0, at=(1, 2))
    assert got["forward_backward_s"] == pytest.approx((0.3 + 5 * 0.2) * 2)
    assert got["optimizer_s"] == pytest.approx(0.05 + 5 * 0.01)  # the optimizer does not scale with the batch
    assert got["step_seconds"] == pytest.approx(2.6 + 0.1)
    # timing noise that makes the second layer look free never makes a deeper model cheaper
    assert extrapolate([0.3, 0.29], [0.05, 0.04], 6, 1.0)["step_seconds"] == pytest.approx(0.35)
    # measured two layers apart (the default, 1 and 3): the difference is split over both
    assert extrapolate([0.3, 0.7], [0.05, 0.07], 6, 1.0)["step_seconds"] == pytest.approx(1.3 + 0.1)


def test_measure_profiles_small_models_and_falls_back_for_wide_ones():
    from lmlab.model.config import preset
    from lmlab.train.cost import PROFILE_FLOPS, profile_step

    cfg = preset("bert-tiny", vocab_size=99, n_layers=3, d_model=32, n_heads=2, d_ff=64, max_seq_len=16)
    sheet = estimate_cost("bert-tiny", tokens=1e5, batch_size=3, seq_len=7, device="measure")
    assert sheet["step_time_method"].startswith("profiled") and sheet["profile"]["profiled_batch"] == 3
    assert sheet["step_seconds"] == pytest.approx(sheet["profile"]["step_seconds"])
    assert sheet["hours"] == pytest.approx(sheet["step_seconds"] * 1e5 / (3 * 7) / 3600)
    got = profile_step(cfg, batch_size=3, seq_len=7, precision="fp32", reps=1)
    assert got["step_seconds"] > 0 and got["optimizer_s"] > 0
    for head, arch in (("clm", "decoder"), ("seq2seq", "encoder-decoder")):
        c = preset("gpt2-tiny" if arch == "decoder" else "transformer-tiny", vocab_size=99, d_model=32, n_heads=2,
                   d_ff=64, n_layers=2)
        assert c.head == head and profile_step(c, 3, 7, "bf16", reps=1)["step_seconds"] > 0
    wide = estimate_cost("gpt2-base", tokens=1e9, batch_size=8, seq_len=1024, device="measure")
    assert wide["step_time_method"].startswith("FLOPs") and wide["profile"] is None  # one sequence > PROFILE_FLOPS
    assert wide["training_flops_per_token"] * 1024 > PROFILE_FLOPS
    fixed = estimate_cost("bert-tiny", tokens=1e5, batch_size=3, seq_len=7, device="measure", mfu=0.3)
    assert fixed["profile"] is None and fixed["mfu"] == 0.3  # an explicit MFU uses the formula


def test_unequal_encoder_decoder_stacks_use_the_formula():
    from lmlab.train.cost import profile_step

    cfg = preset("transformer-tiny", vocab_size=99, d_model=32, n_heads=2, d_ff=64, n_layers=3, n_decoder_layers=1)
    assert profile_step(cfg, 3, 7, "fp32", reps=1) is None


@pytest.mark.parametrize("kind, expected", [("avx2", "fp32"), ("avx512", "fp32"), ("amx_bf16", "bf16")])
def test_precision_auto_is_the_trainings_choice_on_this_machine(kind, expected):
    """bf16 only where the CPU multiplies it natively: elsewhere it is emulated, and slower than fp32."""
    from lmlab import machine

    with machine.force(kind):
        sheet = estimate_cost("gpt2-tiny", tokens=1e6, mfu=0.5)  # an explicit MFU: no profiled steps
    assert sheet["precision"] == expected
    with machine.force("avx2", cuda="7.0"):  # a Volta: training takes fp16 there
        assert estimate_cost("gpt2-tiny", tokens=1e6, device="a100")["precision"] == "bf16"
    assert estimate_cost("gpt2-tiny", tokens=1e6, device="v100")["precision"] == "fp16"  # no bf16 on its datasheet
    with pytest.raises(ConfigError, match="fp16 trains only on CUDA"):
        with machine.force(kind):
            estimate_cost("gpt2-tiny", tokens=1e6, precision="fp16", mfu=0.5)


def test_cli_precision_default_is_auto():
    from lmlab.cli import build_parser

    args = build_parser().parse_args(["cost", "gpt2-tiny"])
    assert args.precision == "auto"


def test_a_fast_machine_profiles_more_of_the_batch(monkeypatch):
    """The FLOP cap starts the profile at one sequence; where a step of the 3-layer model takes less
    than PROFILE_STEP_S, the profile takes more of the real batch (never more than all of it)."""
    import lmlab.train.cost as C

    cfg = preset("gpt2-tiny", vocab_size=99, d_model=32, n_heads=2, d_ff=64, max_seq_len=16)
    per_seq = C._training_flops_per_token(cfg, 7) * 7
    monkeypatch.setattr(C, "PROFILE_FLOPS", per_seq * 1.5)  # one sequence fits, two do not
    monkeypatch.setattr(C, "PROFILE_STEP_S", 1e-9)
    assert C.profile_step(cfg, 5, 7, "fp32", reps=1)["profiled_batch"] == 1
    monkeypatch.setattr(C, "PROFILE_STEP_S", 60.0)
    got = C.profile_step(cfg, 5, 7, "fp32", reps=1)
    assert got["profiled_batch"] == 5 and got["step_seconds"] > 0  # the whole batch: nothing scaled up

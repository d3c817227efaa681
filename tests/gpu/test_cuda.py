"""The CUDA paths, on a CUDA device: float32 training against the CPU's, bf16 autocast and fp16
with the grad scaler against float32, the fused AdamW against torch's reference AdamW, the flash
and memory-efficient attention kernels (each forced alone, so that a fallback to the formula
kernel is an error) against the formula, DDP and FSDP2 over NCCL, and greedy generation against
the CPU's tokens.

    pytest -m gpu tests/gpu        # a few seconds a test on one GPU; skipped, with the reason, without one

With one GPU the NCCL tests run one process (a group of one still goes through NCCL); with two
or more, torchrun starts two.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmlab import machine

M = machine.detect()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not M.cuda_devices, reason="needs a CUDA device: torch.cuda.is_available() is "
                                 "False on this machine (lmlab info shows what lmlab found)")]

TRAIN_TESTS = Path(__file__).resolve().parents[1] / "unit" / "train"
sys.path.insert(0, str(TRAIN_TESTS))
from helpers import RandomTokens, losses, make_trainer, stop_after, tiny_model  # noqa: E402

CUDA = torch.device("cuda", 0)


def needs_bf16():
    if not M.cuda_bf16:
        pytest.skip(f"{M.cuda_name} (sm_{''.join(map(str, M.cuda_capability))}) has no bf16 products")


def trainer(out: Path, **kw):
    return make_trainer(out, model=tiny_model(dropout=0.0), **{"max_steps": 6, "save_every_steps": 100, **kw})


def fit(out: Path, **kw) -> tuple[list[float], dict[str, torch.Tensor]]:
    tr = trainer(out, **kw)
    tr.fit()
    return losses(out), {k: v.detach().float().cpu() for k, v in tr.model.state_dict().items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


# -- precision ---------------------------------------------------------------------------------


def test_float32_training_on_cuda_equals_the_cpu(tmp_path, figure):
    cpu_losses, cpu_params = fit(tmp_path / "cpu", device="cpu", precision="fp32")
    cuda_losses, cuda_params = fit(tmp_path / "cuda", device="cuda", precision="fp32")
    figure(max_loss_diff=max(abs(a - b) for a, b in zip(cpu_losses, cuda_losses)),
           max_param_diff=max_diff(cpu_params, cuda_params))
    assert cuda_losses == pytest.approx(cpu_losses, abs=1e-4)
    assert max_diff(cpu_params, cuda_params) < 1e-4


def test_bf16_autocast_is_the_automatic_choice_and_follows_float32(tmp_path, figure):
    needs_bf16()
    tr = make_trainer(tmp_path / "probe", device="cuda", precision="auto")
    assert tr.precision == "bf16" and not tr.scaler.is_enabled()  # lmlab.machine's choice on sm ≥ 8.0
    with tr._autocast():
        assert tr.model.decoder.layers[0].ffn.w_1(torch.ones(1, 24, device=CUDA)).dtype == torch.bfloat16
    ref_losses, ref_params = fit(tmp_path / "fp32", device="cuda", precision="fp32")
    bf16_losses, bf16_params = fit(tmp_path / "bf16", device="cuda", precision="bf16")
    figure(max_loss_diff=max(abs(a - b) for a, b in zip(ref_losses, bf16_losses)),
           max_param_diff=max_diff(ref_params, bf16_params))
    assert bf16_losses == pytest.approx(ref_losses, abs=0.05)
    assert max_diff(ref_params, bf16_params) < 0.02  # 6 AdamW steps of at most lr = 3e-3 each


def test_fp16_trains_with_the_grad_scaler_and_resumes_it(tmp_path, figure):
    import json

    ref_losses, _ = fit(tmp_path / "fp32", device="cuda", precision="fp32")
    straight = trainer(tmp_path / "fp16", device="cuda", precision="fp16", save_every_steps=3)
    assert straight.scaler.is_enabled()
    straight.fit()
    fp16_losses = losses(tmp_path / "fp16")
    figure(max_loss_diff=max(abs(a - b) for a, b in zip(ref_losses, fp16_losses)),
           loss_scale=straight.scaler.get_scale())
    assert fp16_losses == pytest.approx(ref_losses, abs=0.05)
    rows = [json.loads(line) for line in (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_scale"] > 0 for r in rows)
    state = json.loads((tmp_path / "fp16" / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert state["scaler"]["scale"] == straight.scaler.get_scale()
    # stopped after step 3 and resumed: the scale and its growth tracker come back with the weights
    stop_after(trainer(tmp_path / "resumed", device="cuda", precision="fp16", save_every_steps=3), 3).fit()
    resumed = trainer(tmp_path / "resumed", device="cuda", precision="fp16", save_every_steps=3)
    resumed.fit()
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()
    assert losses(tmp_path / "resumed") == pytest.approx(fp16_losses, abs=1e-3)  # CUDA kernels: not bit for bit


def test_fused_adamw_equals_torch_reference_adamw():
    from lmlab.train.optim import OptimConfig, build_optimizer, param_groups

    model = tiny_model(dropout=0.0).to(CUDA)
    reference = tiny_model(dropout=0.0).to(CUDA)
    reference.load_state_dict(model.state_dict())
    cfg = OptimConfig(lr=3e-3, weight_decay=0.1)
    fused = build_optimizer(model, cfg)
    assert fused.defaults["fused"] is True  # lmlab.machine offers it on CUDA
    plain = torch.optim.AdamW(param_groups(reference, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                              eps=cfg.eps, foreach=False, fused=False)  # the for-loop: torch's reference
    for g in range(5):  # the same gradients into both: the optimizers alone are compared
        x, y = (t.to(CUDA) for t in RandomTokens().batch_at(g))
        model(input_ids=x, labels=y).loss.backward()
        for a, b in zip(model.parameters(), reference.parameters()):
            b.grad = a.grad.clone()
        for opt in (fused, plain):
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


# -- attention kernels -------------------------------------------------------------------------


def attention_pair(family: str, **fields):
    """A small model on CUDA with the fused attention path and the same weights on the formula path."""
    from lmlab.model import Transformer, preset

    cfg = preset(f"{family}-tiny", vocab_size=99, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_seq_len=32,
                 **fields)
    torch.manual_seed(0)
    fused = Transformer(cfg).to(CUDA)
    formula = Transformer(preset(f"{family}-tiny", vocab_size=99, d_model=64, n_heads=4, n_layers=2, d_ff=128,
                                 max_seq_len=32, attention_impl="formula", **fields)).to(CUDA)
    formula.load_state_dict(fused.state_dict())
    return fused, formula


CASES = [("gpt2", {}), ("llama", {"n_kv_heads": 2}), ("bert", {})]


@pytest.mark.parametrize("family,fields", CASES, ids=[c[0] for c in CASES])
def test_flash_kernel_runs_training_with_dropout_and_equals_the_formula(family, fields):
    needs_bf16()
    if "flash" not in M.attention_kernels(CUDA):
        pytest.skip("no flash kernel on this device")
    fused, formula = attention_pair(family, attn_dropout=0.1, **fields)
    ids = torch.randint(0, 99, (3, 16), device=CUDA)
    labels = ids if family != "bert" else torch.where(torch.rand(ids.shape, device=CUDA) < 0.3, ids, -100)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # flash alone: a fallback would be "No available kernel"
            fused.train()
            fused(input_ids=ids, labels=labels).loss.backward()  # dropout, causal (no dense mask), GQA
            fused.eval()
            with torch.no_grad():
                got = fused(input_ids=ids).logits.float()
        with torch.no_grad():
            want = formula.eval()(input_ids=ids).logits.float()
    torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("family,fields", CASES, ids=[c[0] for c in CASES])
def test_memory_efficient_kernel_takes_padding_and_equals_the_formula(family, fields, dtype):
    if dtype == torch.bfloat16:
        needs_bf16()
    fused, formula = attention_pair(family, **fields)
    fused.eval(), formula.eval()
    ids = torch.randint(0, 99, (3, 7), device=CUDA)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding (generation's batches)
    mask[1, 5:] = 0  # right padding (an encoder's batches)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):  # a padding mask, GQA heads repeated for it
            got = fused(input_ids=ids, attention_mask=mask).logits.float()
        want = formula(input_ids=ids, attention_mask=mask).logits.float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    keep = mask.bool()  # logits at padded positions are not read by anything
    torch.testing.assert_close(got[keep], want[keep], atol=tol, rtol=tol)


def test_a_fully_padded_row_gives_zeros_not_nan_on_cuda():
    from lmlab.model.attention import scaled_dot_product_attention

    q, k, v = (torch.randn(2, 2, 5, 16, device=CUDA) for _ in range(3))
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool, device=CUDA)
    mask[1] = False
    want, _ = scaled_dot_product_attention(q, k, v, mask)
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        got = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# -- NCCL: DDP and FSDP2 -----------------------------------------------------------------------


@pytest.fixture
def nccl_group():
    """A process group of one over NCCL (lmlab.machine's backend for CUDA)."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(M.dist_backend(CUDA), init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            device_id=CUDA)
    try:
        yield dist
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_one_gpu_step_through_nccl_equals_the_plain_step(nccl_group, parallel):
    from lmlab.train import distributed as D
    from lmlab.train.optim import OptimConfig, build_optimizer

    assert nccl_group.get_backend() == "nccl"
    plain = tiny_model(dropout=0.0).to(CUDA)
    model = tiny_model(dropout=0.0).to(CUDA)
    runner = D.wrap(model, SimpleNamespace(distributed=True, device=CUDA, world_size=1), parallel)
    assert type(runner).__name__ == ("DistributedDataParallel" if parallel == "ddp" else "FSDPTransformer")
    opts = [build_optimizer(plain, OptimConfig()), build_optimizer(model, OptimConfig())]
    for g in range(3):
        x, y = (t.to(CUDA) for t in RandomTokens().batch_at(g))
        for net, opt in ((plain, opts[0]), (runner, opts[1])):
            net(input_ids=x, labels=y).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    from lmlab.train.checkpoint import full_model_state

    got = full_model_state(model)
    for name, want in plain.state_dict().items():
        torch.testing.assert_close(got[name].to(CUDA), want, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gpus_match_one_with_double_accumulation(tmp_path, parallel):
    if M.cuda_devices < 2:
        pytest.skip("needs two CUDA devices (the one-GPU NCCL test covers one)")
    from safetensors.torch import load_file

    worker = TRAIN_TESTS / "ddp_worker.py"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    subprocess.run([sys.executable, str(worker), str(tmp_path / "one"), "2", str(tmp_path / "one.st"), "ddp", "0",
                    "0", "cuda"], check=True, env=env, capture_output=True, timeout=300)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(worker), str(tmp_path / "two"), "1", str(tmp_path / "two.st"), parallel, "0", "0", "cuda"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = load_file(tmp_path / "one.st"), load_file(tmp_path / "two.st")
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), abs=1e-4)


# -- generation --------------------------------------------------------------------------------


@pytest.mark.parametrize("family,fields", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_greedy_generation_on_cuda_equals_the_cpu(family, fields):
    from lmlab.generate import DecodeLoop, GenerationConfig
    from lmlab.model import Transformer, preset

    torch.manual_seed(0)
    model = Transformer(preset(f"{family}-tiny", vocab_size=99, d_model=64, n_heads=4, n_layers=2, d_ff=128,
                               max_seq_len=64, dropout=0.0, attn_dropout=0.0, **fields)).eval()
    with torch.no_grad():  # less flat logits: the greedy choice is not decided by rounding
        model.embed.tokens.weight.mul_(10)
    prompts = [[5, 17, 3], [42, 8, 8, 8, 1, 77, 2], [9]]  # batch 3, ragged: left padding and its mask
    config = GenerationConfig(temperature=0, max_new_tokens=24, stop_token_ids=[])

    def run(m):
        loop = DecodeLoop(m, prompts, config)
        for _ in loop:
            pass
        return loop.generated

    cpu = run(model)
    cuda = run(model.to(CUDA))
    assert cuda == cpu

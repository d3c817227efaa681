"""lmlab's Muon against `torch.optim.Muon` (the oracle, which iterates Newton–Schulz in bf16),
batched against one matrix at a time, and the dtype the machine chooses."""

import pytest
import torch

from lmlab import machine
from lmlab.train import muon as M
from lmlab.train.optim import OptimConfig, build_optimizer

from .helpers import tiny_model

SHAPES = [(7, 13), (13, 7), (7, 13), (5, 5), (5, 5), (5, 5), (1, 9), (24, 40), (40, 24)]  # tall, wide, square


def run(make_opt, steps: int = 4, seed: int = 0, dtype=torch.float32):
    """The parameters after `steps` updates with the same gradients."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in SHAPES]
    opt = make_opt(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
    return [p.detach() for p in params], opt


def start():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g) for s in SHAPES]


@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_bf16_equals_torch_muon(adjust, nesterov, figure):
    kw = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust)
    ours, _ = run(lambda ps: M.Muon(ps, ns_dtype=torch.bfloat16, **kw))
    ref, _ = run(lambda ps: torch.optim.Muon(ps, **kw))
    moved = [(r - p0).abs().max().item() for r, p0 in zip(ref, start())]
    diff = max((a - b).abs().max().item() / m for a, b, m in zip(ours, ref, moved))
    figure(relative_param_diff=diff)
    # the same bf16 products, stacked: bit for bit on oneDNN with AMX; a batched kernel that rounds
    # otherwise may move an entry by a bf16 ulp (2⁻⁸ of it)
    assert diff <= 1e-2


def test_float32_is_torch_muon_without_the_bf16_rounding(figure):
    """float32 Newton–Schulz: within bf16's rounding of torch's (relative to the step taken), and
    within float32's of the same iteration in float64."""
    kw = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    ref, _ = run(lambda ps: torch.optim.Muon(ps, **kw))
    f32, _ = run(lambda ps: M.Muon(ps, ns_dtype=torch.float32, **kw))
    f64, _ = run(lambda ps: M.Muon(ps, ns_dtype=torch.float64, **kw), dtype=torch.float64)
    moved = [(r - p0).abs().max().item() for r, p0 in zip(ref, start())]
    vs_bf16 = max((a - b).abs().max().item() / m for a, b, m in zip(f32, ref, moved))
    vs_f64 = max((a.double() - b).abs().max().item() / m for a, b, m in zip(f32, f64, moved))
    figure(relative_diff_vs_torch_bf16=vs_bf16, relative_diff_vs_float64=vs_f64)
    assert vs_bf16 <= 0.05 and vs_f64 <= 1e-4
    assert vs_bf16 > 10 * vs_f64  # float32 really is more precise than torch's bf16 here


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_equals_one_matrix_at_a_time(dtype, figure):
    g = torch.Generator().manual_seed(1)
    updates = [torch.randn(s, generator=g) for s in SHAPES]
    batched = M.orthogonalize(updates, 5, dtype)
    alone = [M.orthogonalize([u], 5, dtype)[0] for u in updates]
    assert all(b.shape == u.shape and b.dtype == dtype for b, u in zip(batched, updates))
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(batched, alone))
    figure(max_diff=diff)
    assert diff <= (1e-5 if dtype == torch.float32 else 1e-2)


def test_newton_schulz_flattens_the_singular_values():
    """NS₅ ≈ msign: singular values spread over a factor 300 end within [0.3, 1.3]."""
    g = torch.Generator().manual_seed(2)
    p, _ = torch.linalg.qr(torch.randn(24, 24, generator=g))
    q, _ = torch.linalg.qr(torch.randn(40, 24, generator=g))
    u = p @ torch.diag(torch.logspace(-1.5, 1, 24)) @ q.T  # [24, 40], singular values 0.03 … 10
    s = torch.linalg.svdvals(M.orthogonalize([u], 5, torch.float32)[0])
    assert s.min() > 0.3 and s.max() < 1.3


@pytest.mark.parametrize("kind, dtype", [("avx2", torch.float32), ("avx512", torch.float32),
                                         ("avx512_bf16", torch.bfloat16), ("amx_bf16", torch.bfloat16)])
def test_the_machine_chooses_the_newton_schulz_dtype(kind, dtype, monkeypatch):
    seen = []
    original = M.newton_schulz
    monkeypatch.setattr(M, "newton_schulz", lambda x, *a: seen.append(x.dtype) or original(x, *a))
    with machine.force(kind):
        model = tiny_model(0.0)
        opt = build_optimizer(model, OptimConfig(name="muon"))
        model(torch.randint(0, 37, (3, 11)), labels=torch.randint(0, 37, (3, 11))).loss.backward()
        opt.step()
    assert seen and set(seen) == {dtype}


def test_forced_avx2_steps_equal_explicit_float32():
    with machine.force("avx2"):
        auto, _ = run(lambda ps: M.Muon(ps, lr=0.02))
    f32, _ = run(lambda ps: M.Muon(ps, lr=0.02, ns_dtype=torch.float32))
    bf16, _ = run(lambda ps: M.Muon(ps, lr=0.02, ns_dtype=torch.bfloat16))
    assert all(torch.equal(a, b) for a, b in zip(auto, f32))
    assert not all(torch.equal(a, b) for a, b in zip(auto, bf16))


def test_a_torch_muon_checkpoint_resumes_here():
    """Same state and group keys: torch's optimizer state loads, and the next steps agree."""
    _, ref_opt = run(lambda ps: torch.optim.Muon(ps, lr=0.02), steps=2)
    ours, ours_opt = run(lambda ps: M.Muon(ps, lr=0.02, ns_dtype=torch.bfloat16), steps=2)
    assert set(ours_opt.param_groups[0]) == set(ref_opt.param_groups[0])
    ours_opt.load_state_dict(ref_opt.state_dict())
    buf = [ours_opt.state[p]["momentum_buffer"] for p in ours_opt.param_groups[0]["params"]]
    assert all(torch.equal(b, ref_opt.state[q]["momentum_buffer"])
               for b, q in zip(buf, ref_opt.param_groups[0]["params"]))


def test_refuses_what_torch_refuses():
    with pytest.raises(ValueError, match="matrices"):
        M.Muon([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        M.Muon([torch.zeros(3, 3, requires_grad=True)], adjust_lr_fn="rms")

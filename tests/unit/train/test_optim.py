"""AdamW groups and schedules."""

import math

import pytest
import torch

from lmlab import machine
from lmlab.errors import ConfigError
from lmlab.train.optim import OptimConfig, build_optimizer, lr_at

from .helpers import tiny_model


@pytest.mark.parametrize("fused", [True, False])
def test_groups_decay_matrices_only_and_match_torch(fused, figure):
    model, ref = tiny_model(0.0), tiny_model(0.0)
    cfg = OptimConfig(lr=1e-2, weight_decay=0.3, fused=fused)
    ours = build_optimizer(model, cfg)
    decay, no_decay = ours.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("weight") and not names[id(p)].startswith("embed.") for p in decay["params"])
    assert any(names[id(p)].startswith("embed.") for p in no_decay["params"])
    ref_params = dict(ref.named_parameters())
    torch_opt = torch.optim.AdamW(
        [{"params": [ref_params[names[id(p)]] for p in decay["params"]], "weight_decay": 0.3},
         {"params": [ref_params[names[id(p)]] for p in no_decay["params"]], "weight_decay": 0.0}],
        lr=1e-2, betas=(0.9, 0.99), fused=fused or None)
    assert ours.defaults["fused"] == (fused or None)
    x = torch.randint(0, 37, (3, 11))
    for _ in range(50):
        for m, opt in ((model, ours), (ref, torch_opt)):
            opt.zero_grad()
            m(x, labels=x).loss.backward()
            opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), ref.parameters()))
    figure(max_param_diff=diff)
    assert diff == 0.0


def test_fused_step_equals_the_multi_tensor_step(figure):
    """One step: the fused kernel and the foreach implementation differ by float rounding only."""
    a, b = tiny_model(0.0), tiny_model(0.0)
    x = torch.randint(0, 37, (3, 11))
    for model, fused in ((a, True), (b, False)):
        opt = build_optimizer(model, OptimConfig(lr=1e-2, weight_decay=0.3, fused=fused))
        model(x, labels=x).loss.backward()
        opt.step()
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    figure(max_param_diff=diff)
    assert diff <= 1e-6


@pytest.mark.parametrize("schedule", ["cosine", "linear", "wsd", "constant"])
def test_schedules(schedule):
    cfg = OptimConfig(lr=1.0, min_lr=0.1, warmup_steps=10, schedule=schedule)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] > 0 and lrs[9] < 1.0 and lrs[10] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))
    if schedule != "constant":
        assert lrs[-1] == pytest.approx(0.1, abs=0.02) and all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:]))
    if schedule == "cosine":
        assert lr_at(55, 100, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    if schedule == "wsd":
        assert lrs[79] == 1.0 and lrs[85] < 1.0


def test_bad_optim_values():
    with pytest.raises(ConfigError, match="optim.min_lr"):
        OptimConfig(lr=1e-3, min_lr=1e-2)


def test_muon_adamw_equals_torch_muon_and_adamw_side_by_side(figure):
    """optim.name=muon: torch's Muon on the layers' weight matrices, torch's AdamW on the rest,
    step for step, with the schedule writing one lr into both. On a machine whose Newton–Schulz
    is bf16, as torch's always is (elsewhere it is float32: test_muon.py)."""
    model, ref = tiny_model(0.0), tiny_model(0.0)
    with machine.force("amx_bf16"):
        ours = build_optimizer(model, OptimConfig(name="muon", lr=1e-2, weight_decay=0.3, muon_momentum=0.9))
    names = {id(p): n for n, p in model.named_parameters()}
    hidden = [names[id(p)] for g in ours.param_groups if g["muon"] for p in g["params"]]
    assert hidden and all(".layers." in n and n.endswith("weight") for n in hidden)
    assert not any(n.startswith("embed.") or "norm" in n for n in hidden)
    r = dict(ref.named_parameters())
    muon = torch.optim.Muon([r[n] for n in hidden], lr=1e-2, weight_decay=0.3, momentum=0.9,
                            adjust_lr_fn="match_rms_adamw")
    rest = [n for n in r if n not in hidden]
    adamw = torch.optim.AdamW(
        [{"params": [r[n] for n in rest if r[n].dim() >= 2 and not n.startswith("embed.")], "weight_decay": 0.3},
         {"params": [r[n] for n in rest if r[n].dim() < 2 or n.startswith("embed.")], "weight_decay": 0.0}],
        lr=1e-2, betas=(0.9, 0.99), fused=True)
    x = torch.randint(0, 37, (3, 11))
    for step in range(12):
        lr = 1e-2 * (step + 1) / 12
        for group in [*ours.param_groups, *muon.param_groups, *adamw.param_groups]:
            group["lr"] = lr
        for m, opts in ((model, [ours]), (ref, [muon, adamw])):
            m.zero_grad()
            m(x, labels=x).loss.backward()
            with machine.force("amx_bf16"):
                for opt in opts:
                    opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), ref.parameters()))
    figure(max_param_diff=diff)
    assert diff == 0.0
    assert len(ours.state) == sum(1 for p in model.parameters())  # one state holds both parts'


def test_muon_leaves_lora_factors_and_frozen_weights_to_adamw():
    from lmlab.tasks.lora import LoRAConfig, apply_lora

    model = tiny_model(0.0)
    apply_lora(model, LoRAConfig(rank=2))
    opt = build_optimizer(model, OptimConfig(name="muon"))
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = {names[id(p)] for g in opt.param_groups if g["muon"] for p in g["params"]}
    assert not in_muon  # the base weights are frozen; A and B are low-rank factors, not hidden maps
    assert any("lora_" in names[id(p)] for g in opt.param_groups for p in g["params"])

"""train.ema_decay: the weight average against its closed form, what is evaluated and kept, and
exact resume of the average."""

import pytest
import torch

from lmlab.artifacts import load_tensors
from lmlab.config import from_dict
from lmlab.errors import ConfigError
from lmlab.train.ema import WeightEMA
from lmlab.train.loop import TrainConfig

from .helpers import make_trainer, stop_after, tiny_model


def test_average_follows_its_closed_form_and_skips_frozen_weights():
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 7))
    model[1].weight.requires_grad_(False)
    ema = WeightEMA(model, decay=0.9)
    assert "1.weight" not in ema.names and len(ema.names) == 3
    w0 = model[0].weight.detach().clone()
    expected = w0.clone()
    gen = torch.Generator().manual_seed(3)
    for t in range(1, 40):
        with torch.no_grad():
            model[0].weight.add_(torch.randn(5, 3, generator=gen))
        ema.update()
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * model[0].weight.detach()
    assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(39) == pytest.approx(40 / 49)
    assert ema.decay_at(100) == 0.9
    torch.testing.assert_close(ema.tensors()["0.weight"], expected, rtol=1e-6, atol=1e-6)
    own = model[0].weight.detach().clone()
    with ema.applied():
        torch.testing.assert_close(model[0].weight.detach(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(model[0].weight.detach(), own)  # restored after the block


def test_evaluation_selection_and_the_final_model_use_the_average(tmp_path):
    tr = make_trainer(tmp_path, max_steps=8, eval_every_steps=4, save_every_steps=4, select_metric="val_loss",
                      select_mode="min", ema_decay=0.8)
    seen = []
    tr.eval_hook = lambda: seen.append({n: p.detach().clone() for n, p in tr.model.named_parameters()}) or {}
    tr.fit()
    ckpt = tmp_path / "checkpoints" / "step-00000008"
    raw = load_tensors(ckpt / "model.safetensors")
    avg = {k[len("extra::ema::"):]: v for k, v in load_tensors(ckpt / "optimizer.safetensors").items()
           if k.startswith("extra::ema::")}
    assert avg.keys() == {n for n, p in tr.model.named_parameters()}
    assert any(not torch.equal(raw[k], avg[k]) for k in avg)
    assert all(torch.equal(seen[-1][k], avg[k]) for k in avg)  # evaluated at step 8: the average
    assert all(torch.equal(p.detach(), avg[n]) for n, p in tr.model.named_parameters())  # the model after fit
    best = load_tensors(tmp_path / "best" / "model.safetensors")
    at = tr.best["step"]
    assert all(torch.equal(best[k], seen[at // 4 - 1][k]) for k in avg)


def test_resume_restores_the_average_bit_for_bit(tmp_path):
    kw = dict(max_steps=12, save_every_steps=4, ema_decay=0.9)
    ref = make_trainer(tmp_path / "ref", model=tiny_model(), **kw)
    ref.fit()
    stop_after(make_trainer(tmp_path / "run", model=tiny_model(), **kw), 6).fit()
    run = make_trainer(tmp_path / "run", model=tiny_model(), **kw)
    run.fit()
    assert run.ema.updates == ref.ema.updates == 12
    for (n, a), b in zip(ref.model.named_parameters(), run.model.parameters()):
        assert torch.equal(a, b), n

    plain = make_trainer(tmp_path / "plain", model=tiny_model(), max_steps=4, save_every_steps=4)
    plain.fit()
    with pytest.raises(Exception, match="without train.ema_decay"):
        make_trainer(tmp_path / "plain", model=tiny_model(), max_steps=8, save_every_steps=4, ema_decay=0.9).fit()


def test_ema_decay_must_be_below_one():
    with pytest.raises(ConfigError, match="train.ema_decay"):
        from_dict(TrainConfig, {"ema_decay": 1.0})

"""The training loop: exact resume (bitwise, dropout included), token-weighted accumulation,
non-finite policy (stop, skip, consecutive failures), run lock, architecture guard on resume, learning."""

import json
import math

import pytest
import torch

from lmlab.errors import ArtifactError, CheckpointMismatch
from lmlab.train.guard import TrainingDiverged

from .helpers import RandomTokens, losses, make_trainer, stop_after, tiny_model


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def poison(tr, bad_calls, value=float("nan")):
    """Make the loss of the given forward calls (1-based) non-finite."""
    real_forward, calls = tr.model.forward, {"n": 0}

    def poisoned(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        calls["n"] += 1
        if bad_calls(calls["n"]):
            out.loss = out.loss * value
        return out
    tr.runner = poisoned


def test_loss_goes_down(tmp_path):
    tr = make_trainer(tmp_path, max_steps=40, save_every_steps=40)
    tr.fit()
    ls = losses(tmp_path)
    assert sum(ls[-5:]) / 5 < sum(ls[:5]) / 5 - 0.3


@pytest.mark.parametrize("steps", [1, 5, 8])
def test_resume_is_bitwise_exact_with_dropout(tmp_path, steps, figure):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = make_trainer(ref_dir)
    ref.fit()
    summary = stop_after(make_trainer(run_dir), steps).fit()
    assert summary["preempted"] and summary["steps"] == steps
    second = make_trainer(run_dir, model=tiny_model(seed=123))  # different init: must be overwritten
    second.fit()
    assert losses(run_dir) == losses(ref_dir)
    worst = max((a - b).abs().max().item() for a, b in zip(params(ref.model).values(), params(second.model).values()))
    figure(max_param_diff=worst)
    assert worst == 0.0
    a, b = ref.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) and torch.equal(a[i]["step"], b[i]["step"])
               for i in a)


def test_resume_with_muon_is_bitwise_exact(tmp_path):
    """The two-part optimizer's state (Muon momenta, AdamW moments) survives a checkpoint whole."""
    muon = {"name": "muon"}
    ref = make_trainer(tmp_path / "ref", optim=muon)
    ref.fit()
    assert stop_after(make_trainer(tmp_path / "run", optim=muon), 6).fit()["steps"] == 6
    second = make_trainer(tmp_path / "run", model=tiny_model(seed=123), optim=muon)
    second.fit()
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")
    assert all(torch.equal(a, b) for a, b in zip(params(ref.model).values(), params(second.model).values()))
    a, b = ref.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and any("momentum_buffer" in s for s in a.values())
    assert all(torch.equal(a[i][k], b[i][k]) for i in a for k in a[i])


@pytest.mark.parametrize("optim", ["adamw", "muon"])
def test_resume_with_a_parameter_that_never_gets_a_gradient(tmp_path, optim):
    """A BERT's pooler gets no gradient under masked LM, so the optimizer keeps no state for it;
    torch's set_state_dict refuses such a checkpoint unless told that this is expected."""
    def model(seed=0):
        m = tiny_model(seed=seed)
        m.unused = torch.nn.Linear(5, 3)  # in the state dict, never in the loss
        return m
    ref = make_trainer(tmp_path / "ref", model=model(), optim={"name": optim})
    ref.fit()
    assert stop_after(make_trainer(tmp_path / "run", model=model(), optim={"name": optim}), 6).fit()["steps"] == 6
    second = make_trainer(tmp_path / "run", model=model(seed=123), optim={"name": optim})
    second.fit()
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")
    assert all(torch.equal(a, b) for a, b in zip(params(ref.model).values(), params(second.model).values()))


def test_grad_accumulation_is_token_weighted(tmp_path, figure):
    """Two micro-batches of 3 (with unequal target counts) give the gradient of one batch of 6."""
    class Half(RandomTokens):
        def batch_at(self, g):
            x, y = RandomTokens().batch_at(g // 2)
            if g % 2 == 0:
                y = y.clone()
                y[:, :5] = -100  # fewer targets in the first half: the weighting matters
            return x, y

    class Whole(RandomTokens):
        def batch_at(self, g):
            a, b = Half().batch_at(2 * g), Half().batch_at(2 * g + 1)
            return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    grads = {}
    for name, source, kw in (("accum", Half(), {"grad_accum_steps": 2}), ("whole", Whole(), {"batch_size": 6})):
        tr = make_trainer(tmp_path / name, model=tiny_model(dropout=0.0), **kw)
        tr.source = source
        step = tr.optimizer.step
        tr.optimizer.step = lambda *a, tr=tr, name=name, step=step: (
            grads.setdefault(name, [p.grad.clone() for p in tr.model.parameters()]), step(*a))
        tr.train_step()
    worst = max((a - b).abs().max().item() for a, b in zip(grads["accum"], grads["whole"]))
    figure(max_grad_diff=worst)
    assert worst < 1e-6


def test_nan_loss_stops_before_the_step(tmp_path):
    tr = make_trainer(tmp_path, save_every_steps=2)
    poison(tr, lambda n: n == 5)  # the 5th optimizer step (1 micro-batch each)
    before = {}
    original = tr.train_step

    def spy():
        before.update(params(tr.model))
        return original()
    tr.train_step = spy
    with pytest.raises(TrainingDiverged, match="step-00000004") as e:
        tr.fit()
    assert e.value.exit_code == 3
    after = params(tr.model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_loss_skip_policy_counts_and_continues(tmp_path):
    tr = make_trainer(tmp_path, nonfinite="skip", max_steps=6, save_every_steps=100)
    poison(tr, lambda n: n in (2, 4), float("inf"))
    summary = tr.fit()
    assert summary["skipped_steps"] == 2 and summary["steps"] == 6


def test_inf_in_one_gradient_is_caught_before_the_step(tmp_path, figure):
    """A hook sets one element of one parameter's gradient to inf (20 random parameters): the
    step is skipped (policy skip) and no weight changes."""
    import random

    rng = random.Random(0)
    tr = make_trainer(tmp_path, nonfinite="skip", max_steps=1, max_consecutive_bad=1000)
    names = [n for n, p in tr.model.named_parameters() if p.requires_grad]
    caught = 0
    for name in rng.sample(names, 20):
        param = dict(tr.model.named_parameters())[name]

        def poison_grad(grad):
            grad = grad.clone()
            grad.view(-1)[0] = float("inf")
            return grad
        handle = param.register_hook(poison_grad)
        before = params(tr.model)
        skipped = tr.guard.skipped_steps
        tr.train_step()
        handle.remove()
        after = params(tr.model)
        caught += tr.guard.skipped_steps == skipped + 1 and all(torch.equal(before[k], after[k]) for k in before)
    figure(caught=caught, trials=20)
    assert caught == 20


def test_consecutive_bad_steps_stop_with_skip_policy(tmp_path):
    tr = make_trainer(tmp_path, nonfinite="skip", max_consecutive_bad=3, save_every_steps=1)
    poison(tr, lambda n: n >= 3)
    with pytest.raises(TrainingDiverged, match="3 bad steps in a row.*step-00000002"):
        tr.fit()


def test_two_runs_in_one_directory_are_refused(tmp_path, another_run):
    with another_run(tmp_path) as pid:
        with pytest.raises(ArtifactError, match=f"another run \\(pid {pid}\\)"):
            make_trainer(tmp_path).fit()


def test_the_run_lock_is_reentrant_within_a_process(tmp_path, another_run):
    """A stage takes the lock before preparing its data and keeps it through the trainer's."""
    from lmlab.train.checkpoint import RunLock

    with RunLock(tmp_path):
        make_trainer(tmp_path, max_steps=2).fit()  # the trainer's own lock nests
        assert RunLock._held == {str((tmp_path / ".lock").resolve()): 1}  # still held after it
    assert RunLock._held == {}
    with another_run(tmp_path):  # released: another process can take it
        pass


def test_resume_with_changed_architecture_names_the_field(tmp_path):
    make_trainer(tmp_path, max_steps=4).fit()
    from lmlab.model import Transformer, preset

    other = Transformer(preset("gpt2-tiny", vocab_size=37, d_model=30, n_heads=3, n_layers=2, d_ff=40, max_seq_len=16))
    with pytest.raises(CheckpointMismatch, match="d_model: 24 in the checkpoint, 30 now"):
        make_trainer(tmp_path, model=other, max_steps=8).fit()


def test_checkpoint_of_another_run_is_refused(tmp_path):
    tr = make_trainer(tmp_path, max_steps=4)
    tr.identity = {"tokenizer": "abc", "objective": "clm"}
    tr.fit()
    other = make_trainer(tmp_path, max_steps=8)
    other.identity = {"tokenizer": "xyz", "objective": "clm"}
    with pytest.raises(CheckpointMismatch, match="tokenizer: 'abc' there, 'xyz' here"):
        other.fit()


def test_out_of_memory_suggests_a_smaller_batch(tmp_path):
    from lmlab.errors import LmlabError

    tr = make_trainer(tmp_path, batch_size=3, max_steps=2)

    def boom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    tr.runner = boom
    with pytest.raises(LmlabError, match="batch_size=1 --train.grad_accum_steps=2"):
        tr.fit()


def test_tensorboard_scalars_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    make_trainer(tmp_path, max_steps=3, save_every_steps=100).fit()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tmp_path):
    eager = make_trainer(tmp_path / "e", max_steps=6, save_every_steps=100, model=tiny_model(dropout=0.0))
    eager.fit()
    compiled = make_trainer(tmp_path / "c", max_steps=6, save_every_steps=100, model=tiny_model(dropout=0.0),
                            compile=True)
    compiled.fit()
    assert losses(tmp_path / "c") == pytest.approx(losses(tmp_path / "e"), abs=1e-4)


def test_metrics_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    make_trainer(tmp_path, max_steps=4).fit()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"train_loss": 1.0, "st')  # killed mid-write after the last checkpoint
    make_trainer(tmp_path, max_steps=6).fit()
    assert [r for r in losses(tmp_path)] and len(losses(tmp_path)) == 6


def test_rows_of_a_run_killed_before_its_first_checkpoint_are_not_kept(tmp_path):
    """Killed at step 2, before any checkpoint: the restart trains steps 1, 2 again, so their old
    rows go (found by the kill-during-save campaign: they were kept, and metrics.jsonl had 14 rows)."""
    make_trainer(tmp_path / "ref", max_steps=6).fit()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(
        line + "\n" for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()[:2]))
    make_trainer(tmp_path / "run", max_steps=6).fit()
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")


def test_resume_never_refuses_a_directory_with_an_earlier_run(tmp_path):
    """A fresh run in a used directory would append to the earlier metrics.jsonl and leave the
    earlier run's later checkpoints for the next `resume=auto` to pick up."""
    from lmlab.errors import ConfigError

    make_trainer(tmp_path, max_steps=4).fit()
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="resume=never starts a new run"):
        make_trainer(tmp_path, max_steps=4, resume="never").fit()
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing lost, nothing appended
    make_trainer(tmp_path / "fresh", max_steps=2, resume="never").fit()  # an empty directory is fine
    assert len(losses(tmp_path / "fresh")) == 2


def test_a_run_whose_checkpoints_are_all_corrupt_is_refused_not_restarted(tmp_path):
    """Starting again at step 0 would append steps 1, 2, … to the earlier metrics and train over
    what may be a recoverable run: refused, naming each checkpoint and the way out."""
    from lmlab.errors import ArtifactCorrupt, ConfigError

    make_trainer(tmp_path, max_steps=4, save_every_steps=2).fit()
    for step in (2, 4):
        path = tmp_path / "checkpoints" / f"step-{step:08d}" / "model.safetensors"
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 3)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(ArtifactCorrupt, match="no checkpoint.*can be resumed") as e:
        make_trainer(tmp_path, max_steps=6).fit()
    message = str(e.value)
    assert "step-00000002" in message and "step-00000004" in message and "model.safetensors" in message
    assert "another --out" in message and "delete" in message
    with pytest.raises(ConfigError, match="resume=never starts a new run"):
        make_trainer(tmp_path, max_steps=6, resume="never").fit()
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]


def test_a_run_killed_before_its_first_checkpoint_starts_over_with_one_history(tmp_path):
    """Nothing to resume and nothing lost: the rerun starts at step 0, and metrics.jsonl does
    not keep the killed attempt's rows (1, 2, 3, 1, 2, 3)."""
    import shutil

    make_trainer(tmp_path, max_steps=3).fit()
    shutil.rmtree(tmp_path / "checkpoints")  # as if killed before the first save
    make_trainer(tmp_path, max_steps=3).fit()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_loss_scale_overflow_skips_the_step_without_stopping(tmp_path):
    """fp16's grad scaler (here on CPU gradients, with a scale so large that they overflow):
    an overflow at a finite loss skips the step and halves the scale; it is not divergence,
    even under nonfinite=stop."""
    tr = make_trainer(tmp_path, model=tiny_model(dropout=0.0), max_steps=6, nonfinite="stop")
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
    start = {k: v.clone() for k, v in tr.model.state_dict().items()}
    first = tr.train_step()
    assert first["loss_scale"] == 2.0 ** 127 and not math.isfinite(first["grad_norm"])
    assert all(torch.equal(v, start[k]) for k, v in tr.model.state_dict().items())  # step skipped
    assert tr.scaler.get_scale() == 2.0 ** 126 and tr.guard.skipped_steps == 0
    tr.step += 1
    rows = []
    while tr.step < 6:
        rows.append(tr.train_step())
        tr.step += 1
    assert math.isfinite(rows[-1]["grad_norm"]) and rows[-1]["loss_scale"] < 2.0 ** 126
    assert any(not torch.equal(v, start[k]) for k, v in tr.model.state_dict().items())  # it learns again


@pytest.mark.parametrize("clip", [0.05, 100.0, 0.0], ids=["clipped", "under-the-limit", "off"])
def test_a_step_clips_as_torch_clip_grad_norm_does(tmp_path, clip):
    """One step equals the reference: backward, `clip_grad_norm_`, `torch.optim.AdamW` (the loop
    skips the multiplication by 1 that clip_grad_norm_ makes below the limit)."""
    from lmlab.train.optim import param_groups

    trainer = make_trainer(tmp_path, model=tiny_model(dropout=0.0), optim={"grad_clip": clip, "warmup_steps": 0})
    reference = tiny_model(dropout=0.0)
    opt = torch.optim.AdamW(param_groups(reference, trainer.optim_cfg.weight_decay), lr=trainer.optim_cfg.lr,
                            betas=(trainer.optim_cfg.beta1, trainer.optim_cfg.beta2), eps=trainer.optim_cfg.eps)
    row = trainer.train_step()
    x, y = RandomTokens().batch_at(0)
    reference(x, labels=y).loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), clip if clip > 0 else float("inf"))
    opt.step()
    assert row["grad_norm"] == pytest.approx(norm.item(), rel=1e-6)
    assert clip == 0 or (norm.item() > clip) == (clip == 0.05)  # the cases are what their names say
    for (name, p), q in zip(trainer.model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)

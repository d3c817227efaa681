"""A7: every stored format version, tests/fixtures/checkpoints/vN/, loaded by the current code."""

from __future__ import annotations

import json
import shutil
import traceback
from pathlib import Path

import torch

from .environment import ROOT
from .table import row

FIXTURES = ROOT / "tests" / "fixtures" / "checkpoints"
TOLERANCE = 1e-6


class StoredBatches:
    """The fixture's training batches: index g → row g of a [steps, B, T + 1] tensor."""

    def __init__(self, batches: torch.Tensor):
        self.batches = batches

    def batch_at(self, g: int):
        ids = self.batches[g]
        return ids[:, :-1], ids[:, 1:]


def check_version(fixture: Path, work: Path) -> dict:
    """The model directory's and the checkpoint's logits on the stored input, the tokenizer's ids, and the
    losses of a run resumed from the checkpoint, against the stored golden values."""
    from lmlab.artifacts import FORMAT_VERSION, load_tensors, read_json
    from lmlab.config import from_dict
    from lmlab.model import Transformer
    from lmlab.model.pretrained import load_model, read_model_config
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.train.checkpoint import load_checkpoint
    from lmlab.train.loop import TrainConfig, Trainer
    from lmlab.train.objectives import CausalLM
    from lmlab.train.optim import OptimConfig, build_optimizer

    golden = read_json(fixture / "golden.json")
    version = golden["format_version"]
    manifests = {read_json(m).get("format_version") for m in fixture.rglob("manifest.json")}
    if manifests != {version} or fixture.name != f"v{version}" or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{fixture.name}: format_version {version} (manifests {sorted(manifests)}) is not one this "
                         f"lmlab reads (1..{FORMAT_VERSION}) under its own name")
    tensors = load_tensors(fixture / "golden.safetensors")
    ids = tensors["text_ids"]
    tokens_equal = Tokenizer.load(fixture / "model" / "tokenizer").encode(golden["text"]) == ids[0].tolist()
    with torch.no_grad():
        model_diff = (load_model(fixture / "model")(input_ids=ids).logits - tensors["model_logits"]).abs().max().item()
    checkpoint = fixture / golden["checkpoint"]
    cfg = read_model_config(checkpoint)
    optim = from_dict(OptimConfig, golden["optim"])
    torch.manual_seed(1)
    model = Transformer(cfg)
    load_checkpoint(checkpoint, model, build_optimizer(model, optim))
    with torch.no_grad():
        ckpt_diff = (model.eval()(input_ids=ids).logits - tensors["checkpoint_logits"]).abs().max().item()
    run = work / fixture.name
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(fixture / "run", run)
    torch.manual_seed(2)
    Trainer(Transformer(cfg), CausalLM(), StoredBatches(tensors["batches"]), from_dict(TrainConfig, golden["train"]),
            optim, run, identity=golden["identity"]).fit()
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss_diff = max(abs(r["train_loss"] - golden["losses"][r["step"] - 1]) for r in resumed)
    steps_ok = [r["step"] for r in resumed] == list(range(golden["saved_at_step"] + 1, len(golden["losses"]) + 1))
    return {"version": version, "model": model_diff, "checkpoint": ckpt_diff, "losses": loss_diff,
            "ok": tokens_equal and steps_ok and max(model_diff, ckpt_diff, loss_diff) <= TOLERANCE}


def campaign_a7(work: Path, quick: bool) -> list[dict]:
    fixtures = sorted((p for p in FIXTURES.glob("v*") if p.is_dir()), key=lambda p: p.name)
    results, errors = [], []
    for fixture in fixtures:
        try:
            results.append(check_version(fixture, work / "a7"))
        except Exception as e:  # a version that does not load is a failure of the item, not of the campaign
            traceback.print_exc()
            errors.append(f"{fixture.name}: {type(e).__name__}: {e}")
    loaded = [f"v{r['version']}" for r in results if r["ok"]]
    worst = {k: max((r[k] for r in results), default=float("nan")) for k in ("model", "checkpoint", "losses")}
    lost = (f"versions loaded {len(loaded)}/{len(fixtures)} ({', '.join(loaded) or 'none'}); max |Δlogit| vs golden: "
            f"model directory {worst['model']:.1e}, training checkpoint {worst['checkpoint']:.1e}; losses of the "
            f"run resumed from the checkpoint {worst['losses']:.1e} (tolerance {TOLERANCE:g}); tokenizer ids equal")
    if errors:
        lost += "; " + "; ".join(errors)
    return [row("A7", len(fixtures), len(fixtures) - len(loaded), lost,
                "campaign A7 (each tests/fixtures/checkpoints/vN: `load_model` of model/, `load_checkpoint` of "
                "run/checkpoints/step-00000003 and a Trainer resumed from it, against golden.safetensors/json)",
                versions=len(fixtures), loaded=len(loaded), **{f"max_abs_diff_{k}": v for k, v in worst.items()})]

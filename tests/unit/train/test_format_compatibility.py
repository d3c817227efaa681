"""Format compatibility (A7): every stored format version, tests/fixtures/checkpoints/vN/ (written once by
make_fixture.py when version N was introduced), loads with the current code and reproduces its golden
figures: the model directory's logits and the training checkpoint's logits within 1e-6, the tokenizer's ids
exactly, and a run resumed from the checkpoint continues with the stored losses (weights, AdamW moments,
RNG states for dropout, step and trainer counters all restored)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmlab.artifacts import FORMAT_VERSION, load_tensors, read_json
from lmlab.config import from_dict
from lmlab.model import Transformer
from lmlab.model.pretrained import load_model, read_model_config
from lmlab.tokenizer.tokenizer import Tokenizer
from lmlab.train.checkpoint import load_checkpoint
from lmlab.train.loop import TrainConfig, Trainer
from lmlab.train.objectives import CausalLM
from lmlab.train.optim import OptimConfig, build_optimizer

FIXTURES = Path(__file__).parents[2] / "fixtures" / "checkpoints"
STORED = sorted((p for p in FIXTURES.glob("v*") if p.is_dir()), key=lambda p: p.name)
TOLERANCE = 1e-6


class StoredBatches:
    def __init__(self, batches: torch.Tensor):
        self.batches = batches  # [steps, B, T + 1]

    def batch_at(self, g: int):
        ids = self.batches[g]
        return ids[:, :-1], ids[:, 1:]


def known_version(fixture: Path) -> int:
    """The format version `fixture` stores, or a test failure that says what is wrong: a version this lmlab does
    not know, or artifacts whose manifests disagree with the directory's name."""
    found = {str(m.parent.relative_to(fixture)): read_json(m).get("format_version")
             for m in sorted(fixture.rglob("manifest.json"))}
    golden = read_json(fixture / "golden.json").get("format_version")
    number = fixture.name[1:]
    if not number.isdigit() or {golden, *found.values()} != {int(number)}:
        pytest.fail(f"{fixture}: the directory name, golden.json ({golden}) and the manifests ({found}) must all "
                    "give one format_version; a stored fixture is written once by make_fixture.py, never edited")
    if not 1 <= golden <= FORMAT_VERSION:
        pytest.fail(f"{fixture}: format_version {golden} is unknown to this lmlab, which reads versions 1.."
                    f"{FORMAT_VERSION} (lmlab.artifacts.FORMAT_VERSION); a fixture of a newer format belongs to "
                    "the code that writes it")
    return golden


def test_every_format_version_has_a_stored_fixture():
    stored = sorted(int(p.name[1:]) for p in STORED if p.name[1:].isdigit())
    assert stored == list(range(1, FORMAT_VERSION + 1)), (
        f"stored fixtures {stored}, format versions 1..{FORMAT_VERSION}: when a format version is introduced, run "
        "tests/fixtures/checkpoints/make_fixture.py once and commit its directory")


def test_an_unknown_format_version_fails_with_a_clear_message(tmp_path):
    fixture = tmp_path / f"v{FORMAT_VERSION + 1}"
    shutil.copytree(STORED[-1], fixture)
    for path in [*fixture.rglob("manifest.json"), fixture / "golden.json"]:
        data = read_json(path)
        data["format_version"] = FORMAT_VERSION + 1
        path.write_text(json.dumps(data))
    with pytest.raises(pytest.fail.Exception, match=f"format_version {FORMAT_VERSION + 1} is unknown"):
        known_version(fixture)
    (fixture / "golden.json").write_text(json.dumps({**read_json(fixture / "golden.json"), "format_version": 1}))
    with pytest.raises(pytest.fail.Exception, match="must all give one format_version"):
        known_version(fixture)


@pytest.mark.parametrize("fixture", STORED, ids=[p.name for p in STORED])
def test_stored_format_loads_with_its_golden_logits(fixture, tmp_path, figure):
    known_version(fixture)
    golden = read_json(fixture / "golden.json")
    tensors = load_tensors(fixture / "golden.safetensors")
    text_ids = tensors["text_ids"]

    # the model directory (as `lmlab pretrain` writes OUT/model), with its tokenizer
    tokenizer = Tokenizer.load(fixture / "model" / "tokenizer")
    assert tokenizer.encode(golden["text"]) == text_ids[0].tolist()
    with torch.no_grad():
        model_diff = (load_model(fixture / "model")(input_ids=text_ids).logits - tensors["model_logits"]).abs().max()

    # the training checkpoint, loaded as resume loads it
    checkpoint = fixture / golden["checkpoint"]
    cfg = read_model_config(checkpoint)
    torch.manual_seed(1)
    model = Transformer(cfg)
    optim = from_dict(OptimConfig, golden["optim"])
    state = load_checkpoint(checkpoint, model, build_optimizer(model, optim))
    assert state["step"] == golden["saved_at_step"]
    with torch.no_grad():
        checkpoint_diff = (model.eval()(input_ids=text_ids).logits - tensors["checkpoint_logits"]).abs().max()

    # and a run resumed from it: the losses of the steps after the checkpoint
    run = tmp_path / "run"
    shutil.copytree(fixture / "run", run)
    torch.manual_seed(2)  # another initialisation: the checkpoint must replace it
    trainer = Trainer(Transformer(cfg), CausalLM(), StoredBatches(tensors["batches"]),
                      from_dict(TrainConfig, golden["train"]), optim, run, identity=golden["identity"])
    summary = trainer.fit()
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(golden["losses"])
    assert [r["step"] for r in resumed] == list(range(golden["saved_at_step"] + 1, len(golden["losses"]) + 1))
    loss_diff = max(abs(r["train_loss"] - golden["losses"][r["step"] - 1]) for r in resumed)

    figure(format_version=golden["format_version"], model_logits_max_abs_diff=model_diff,
           checkpoint_logits_max_abs_diff=checkpoint_diff, resumed_losses_max_abs_diff=loss_diff)
    written = f" (written with torch {golden['torch']}, this is {torch.__version__})"
    assert model_diff <= TOLERANCE, f"model/ logits differ by {model_diff:.3g}{written}"
    assert checkpoint_diff <= TOLERANCE, f"checkpoint logits differ by {checkpoint_diff:.3g}{written}"
    assert loss_diff <= TOLERANCE, f"losses after resume differ by {loss_diff:.3g}{written}"

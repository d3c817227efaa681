"""LoRA: starts as the base model, merges exactly, trains only adapters and head, saves the adapter,
resumes exactly (another rank is refused by name)."""

import json
import shutil

import pytest
import torch

import lmlab
from lmlab.artifacts import load_tensors
from lmlab.errors import CheckpointMismatch
from lmlab.model import Transformer, preset
from lmlab.tasks.finetune import finetune
from lmlab.tasks.lora import LoRAConfig, LoRALinear, apply_lora, merge_lora

from .conftest import FIX, preempted_at, tiny


def _model():
    torch.manual_seed(0)
    return Transformer(preset("bert-tiny", vocab_size=50, d_model=24, n_heads=3, n_layers=2, d_ff=40,
                              head="classification", n_labels=3, dropout=0.0, attn_dropout=0.0)).eval()


def test_lora_linear_formula():
    base = torch.nn.Linear(5, 7)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 5)
    assert torch.equal(lora(x), base(x))  # B = 0: the base model exactly
    torch.nn.init.normal_(lora.lora_b)
    want = base(x) + 2.0 * x @ lora.lora_a.T @ lora.lora_b.T  # α/r = 2
    assert torch.allclose(lora(x), want, atol=1e-6)
    assert torch.allclose(lora.merged()(x), want, atol=1e-6)


def test_apply_merge_and_the_fused_qkv_path():
    model = _model()
    ids = torch.randint(50, (2, 9))
    before = model(ids).logits
    info = apply_lora(model, LoRAConfig(rank=4, targets=["q", "v", "w_1"]))
    assert info["wrapped_layers"] == 2 * 3
    assert torch.allclose(model(ids).logits, before, atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("head.", "pooler.")) for n in trainable)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_b, std=0.1)
    adapted = model(ids).logits  # attention reads q.weight for its fused QKV product: must see ΔW
    assert not torch.allclose(adapted, before, atol=1e-4)
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert set(merged.state_dict()) == set(_model().state_dict())
    assert torch.allclose(merged(ids).logits, adapted, atol=1e-5)


def test_finetune_with_lora(tmp_path):
    out = tmp_path / "r"
    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(out),
                 overrides=tiny("--train.max_steps=30", "--train.eval_every_steps=30", "--lora.rank=4",
                                "--optim.lr=1e-2"))
    assert 0 < s["lora"]["trainable_fraction"] < 0.5
    adapter = load_tensors(out / "model" / "adapter.safetensors")
    assert any("lora_a" in k for k in adapter) and "head.out.weight" in adapter
    assert lmlab.pipeline("sentiment", out / "model")("the film was good")["label"] in ("0", "1")


def _curve(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r.get("val_loss"), r.get("val_accuracy")) for r in rows]


def test_lora_run_resumes_exactly(tmp_path, monkeypatch):
    from lmlab.train.loop import Trainer

    def run(out, rank=4):
        return finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(out),
                        overrides=tiny("--train.max_steps=6", "--train.save_every_steps=1", "--train.log_every_steps=1",
                                       "--train.eval_every_steps=3", f"--lora.rank={rank}", "--lora.dropout=0.1",
                                       "--optim.lr=1e-2"))
    run(tmp_path / "ref")
    # Both runs use one tokenizer: training a WordPiece vocabulary twice on the same text is not
    # deterministic in `tokenizers` (hash-map order breaks frequency ties: huggingface/tokenizers
    # #1794), and what is tested here is the resume, given the run's own tokenizer.
    shutil.copytree(tmp_path / "ref" / "work", tmp_path / "run" / "work")  # its tokenizer and the record of it
    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", preempted_at(4))
        s = run(tmp_path / "run")
    assert s["preempted"] and s["steps"] == 4
    with pytest.raises(CheckpointMismatch, match=r"lora\.rank: 4 there, 8 here"):  # before any tensor is read
        run(tmp_path / "run", rank=8)
    s = run(tmp_path / "run")
    assert s["steps"] == 6 and _curve(tmp_path / "run") == _curve(tmp_path / "ref")
    assert len(_curve(tmp_path / "ref")) == 6
    ref, got = (load_tensors(tmp_path / r / "model" / "adapter.safetensors") for r in ("ref", "run"))
    assert ref.keys() == got.keys() and any("lora_b" in k for k in ref)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert any(bool(v.abs().max() > 0) for k, v in ref.items() if "lora_b" in k)  # B left zero: nothing trained


def test_adapter_on_its_base_equals_the_merged_model(tmp_path):
    import json

    from lmlab.model import load_model
    from lmlab.tasks.lora import attach_adapter
    from lmlab.model.pretrained import model_from_init

    first = tmp_path / "first"  # a from-scratch run gives a base with a tokenizer
    finetune("sentiment", str(FIX / "sentiment_train.csv"), out=str(first), overrides=tiny("--train.max_steps=2"))
    out = tmp_path / "lora"
    finetune("sentiment", str(FIX / "sentiment_train.csv"), init=str(first / "model"), out=str(out),
             overrides=tiny("--train.max_steps=20", "--lora.rank=4", "--optim.lr=1e-2"))
    info = json.loads((out / "model" / "task.json").read_text())["lora"]
    assert info["base"] == str(first / "model") and info["rank"] == 4
    rebuilt, _ = model_from_init(first / "model", {"head": "classification", "n_labels": 2})
    attach_adapter(rebuilt, load_tensors(out / "model" / "adapter.safetensors"),
                   LoRAConfig(**{k: v for k, v in info.items() if k != "base"}))
    merged = merge_lora(rebuilt).eval()
    ids = torch.randint(5, 150, (3, 11))
    assert torch.allclose(merged(ids).logits, load_model(out / "model")(ids).logits, atol=1e-5)


def test_lora_best_is_a_plain_model_with_its_adapter(tmp_path):
    """OUT/best of a LoRA run loads on its own (merged weights) and carries the adapter."""
    from lmlab.model import load_model

    out = tmp_path / "r"
    finetune("sentiment", str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv"), out=str(out),
             overrides=tiny("--train.max_steps=8", "--train.eval_every_steps=4", "--lora.rank=4",
                            "--optim.lr=1e-2"))
    model = load_model(out / "best")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert not any("lora_" in k or ".base." in k for k in model.state_dict())
    adapter = load_tensors(out / "best" / "adapter.safetensors")
    assert any("lora_b" in k for k in adapter)
    final = load_tensors(out / "model" / "model.safetensors")  # the final model is the best one, merged
    mine = model.state_dict()
    assert set(final) == set(mine) and all(torch.allclose(mine[k], final[k], atol=1e-6) for k in final)

"""`lmlab finetune TASK`: a task model from training data, with the one training loop.

    lmlab finetune sentiment --train sst2:train --eval sst2:dev --out out/sst2
    lmlab finetune sentiment --train train.csv --eval dev.csv --init out/bert/model --out out/cls
    lmlab finetune qa --train cmrc2018:train --eval cmrc2018:trial --init hf:/models/bert-base-chinese --out out/cmrc
    lmlab finetune translation --train multi30k:train --eval multi30k:val --task.seq2seq.direction=de-en --out out/mt
    ... --config configs/finetune/sst2.yaml --train.max_steps=500 --lora.rank=8

``--init`` is an lmlab model directory (e.g. ``OUT/model`` of `lmlab pretrain`; its tokenizer is
used), ``hf:DIR`` (a Hugging Face directory on disk, imported as `lmlab hf import` does, tokenizer included),
or absent: a tokenizer is trained on the training texts and a small model of
``model.preset`` is trained from scratch (for comparison, and so that a CSV alone works);
``--task.vectors=DIR`` then initialises its token embeddings from word vectors (`lmlab embed train`).

Config = dataclass defaults ← the task's recipe defaults (recipes/*.yaml) ← ``--config`` YAML ← overrides.
``task.epochs`` (if > 0) sets ``train.max_steps``. With evaluation data, the task metric is computed
at every evaluation (``val_accuracy``, ``val_f1``, ``val_rougeL``, ``val_bleu`` in
metrics.jsonl), the best weights by it are kept (``train.select_metric``), ``train.patience``
stops early, and the final model is the best one. A run resumes from OUT/checkpoints.
Under torchrun, rank 0 alone builds the tokenizer (the others wait, then read it) and writes
every file.

Written: OUT/model (the task model directory: weights, tokenizer/, task.json), OUT/work (the
tokenizer trained there or the ``hf:`` model imported there, and work_config.json, the options it
was built with: a later run with other options is refused by field rather than given it),
OUT/checkpoints, OUT/best, OUT/metrics.jsonl, OUT/loss.png, OUT/eval.json (+ predictions and, for
classification, confusion_matrix.png), OUT/summary.json.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.artifacts import claim, load_tensors, write_json
from lmlab.config import from_dict, merge, parse_overrides, read_yaml, run_record, to_dict
from lmlab.errors import ArtifactError, ConfigError, DataError
from lmlab.model.ngram import PRESET as NGRAM_PRESET
from lmlab.tasks import get_task
from lmlab.tasks.lora import LoRAConfig
from lmlab.tasks.task import TaskConfig
from lmlab.train.loop import TrainConfig
from lmlab.train.optim import OptimConfig


@dataclass
class FinetuneConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: dict[str, Any] = field(default_factory=dict)  # preset + fields; with --init: INIT_MODEL_OPTIONS
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)


def load_finetune_config(task, pretrained: bool, config: str | None, overrides) -> FinetuneConfig:
    base = {"train": {"select_metric": "val_" + task.select_metric, "select_mode": "max"}}
    layers = [base, task.recipe(pretrained), read_yaml(config) if config else {}, parse_overrides(overrides)]
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge(data, layer)
    # epochs and max_steps both set the length of the run: the later layer wins
    last = lambda section, key: max((i for i, lay in enumerate(layers) if key in lay.get(section, {})), default=-1)  # noqa: E731
    if last("train", "max_steps") > last("task", "epochs"):
        data.setdefault("task", {})["epochs"] = 0.0
    try:
        return from_dict(FinetuneConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{config}: {e}" if config else str(e)) from None


def _fingerprint(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {prefix + k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


# With --init, these model options may change: none alters a trained tensor (a copy head on a
# pretrained encoder-decoder starts fresh).
INIT_MODEL_OPTIONS = ("dropout", "attn_dropout", "copy", "unpad")
_SHAPE = ("arch", "d_model", "n_heads", "n_kv_heads", "n_layers", "decoder_layers", "d_ff", "position", "norm",
          "norm_position", "activation")  # what a --model.preset must agree on with an --init model


def _init_model_options(options: dict[str, Any], init_dir: Path, init: str) -> dict[str, Any]:
    """The --model.* options that apply to an --init model; any other that differs from the
    model's own value is refused, never silently ignored."""
    from lmlab.model.config import preset
    from lmlab.model.pretrained import read_model_config

    own = to_dict(read_model_config(init_dir))
    given = {k: v for k, v in options.items() if k not in INIT_MODEL_OPTIONS}
    named = {k: f"model.{k}" for k in given}
    if "preset" in given:  # a from-scratch recipe: fine if it describes the init model's shape
        name = given.pop("preset")
        try:
            shape = to_dict(preset(name, **{k: v for k, v in given.items() if k in own}))
        except ConfigError:
            shape = {}
        for k in _SHAPE:
            if k in own and k not in given:
                given[k], named[k] = shape.get(k, "?"), f"model.preset ({name} has {k}={shape.get(k, '?')})"
    for key, value in given.items():
        if key not in own or own[key] != value:
            raise ConfigError(f"{named[key]}: --init {init} brings its own architecture ({key}="
                              f"{own.get(key, 'not a field')}); only {', '.join(INIT_MODEL_OPTIONS)} can change "
                              "when fine-tuning it: drop the option, or match the init model")
    return {k: v for k, v in options.items() if k in INIT_MODEL_OPTIONS}


WORK_RECORD = "work_config.json"


def work_options(task, cfg: FinetuneConfig, init: str | None, train_fingerprint: str) -> dict[str, Any]:
    """The options that decide what OUT/work holds, by their override names: the Hugging Face
    directory imported there, or the training texts and options of the tokenizer trained there."""
    if init:
        return {"init": f"hf:{Path(init[3:]).resolve()}"} if init.startswith("hf:") else {}
    preset_name = cfg.model.get("preset", task.default_preset)
    options = {"task": task.name, "model.preset": preset_name, "train": train_fingerprint}
    if preset_name != NGRAM_PRESET:  # (the n-gram vocabulary checks its own options)
        t = cfg.task
        options.update({"task.vocab_size": t.vocab_size, "task.lowercase": t.lowercase,
                        "task.seq2seq.split_cjk": t.seq2seq.split_cjk, "task.max_length": t.max_length})
    return options


def build_model(task, cfg: FinetuneConfig, init: str | None, train_examples, meta, work: Path,
                train_fingerprint: str):
    """(model, tokenizer, tokenizer directory, notes) for --init or from scratch. OUT/work (an
    imported model, a trained tokenizer) is reused only when built with the same options."""
    if want := work_options(task, cfg, init, train_fingerprint):
        claim(work, want, WORK_RECORD, what="an imported model or a trained tokenizer")
    from lmlab.model import Transformer
    from lmlab.model.config import preset
    from lmlab.hf.init_source import resolve_init
    from lmlab.model.pretrained import model_from_init
    from lmlab.tasks.task import load_task_tokenizer, train_task_tokenizer

    init_dir = resolve_init(init, work)
    fields = task.model_fields(meta, cfg.task)
    if init_dir is not None and cfg.model.get("preset") == NGRAM_PRESET:
        raise ConfigError(f"model.preset: {NGRAM_PRESET} is a linear model trained from scratch; it takes no "
                          f"--init {init} (drop one of the two)")
    if init_dir is not None and cfg.task.vectors:
        raise ConfigError(f"task.vectors: word vectors initialise a model trained from scratch; --init {init} "
                          "brings its own embeddings (drop one of the two)")
    if init_dir is not None:
        if not (init_dir / "tokenizer").is_dir():
            raise ArtifactError(f"--init {init}: the model directory has no tokenizer/; fine-tuning needs the "
                                "tokenizer the model was trained with")
        tok = load_task_tokenizer(init_dir / "tokenizer")
        fields.update(_init_model_options(cfg.model, init_dir, init))
        model, fresh = model_from_init(init_dir, fields)
        if model.config.max_seq_len < task.max_positions(cfg.task):
            raise ConfigError(f"task.max_length: needs {task.max_positions(cfg.task)} positions but the model "
                              f"has max_seq_len={model.config.max_seq_len}; lower --task.max_length")
        if tok.vocab_size > model.config.vocab_size:
            raise ArtifactError(f"--init {init}: tokenizer has {tok.vocab_size} tokens, "
                                f"model {model.config.vocab_size}")
        return model, tok, init_dir / "tokenizer", {"init": str(init_dir), "new_tensors": fresh}
    spec = {"preset": task.default_preset, **cfg.model}
    if spec["preset"] == NGRAM_PRESET:
        return _ngram_model(task, cfg, train_examples, meta, work, fields)
    tok_dir = work / "tokenizer"
    tok = (load_task_tokenizer(tok_dir) if (tok_dir / "manifest.json").exists()
           else train_task_tokenizer(task, task.texts(train_examples), work, cfg.task))
    name = spec.pop("preset")
    spec.setdefault("max_seq_len", task.max_positions(cfg.task))
    try:
        model_cfg = preset(name, vocab_size=tok.vocab_size, pad_token_id=tok.pad_id if tok.pad_id is not None else 0,
                           **{**spec, **fields})
    except ConfigError as e:
        raise ConfigError(f"model: {e}") from None
    model, notes = Transformer(model_cfg), {"init": None, "preset": name}
    if cfg.task.vectors:
        from lmlab.embeddings.initialize import init_model_embeddings

        notes["vectors"] = init_model_embeddings(model, tok, cfg.task.vectors)
    return model, tok, tok_dir, notes


def _ngram_model(task, cfg: FinetuneConfig, train_examples, meta, work: Path, fields: dict[str, Any]):
    """The bag-of-n-grams classifier (`lmlab.model.ngram`) and its vocabulary, from the training texts."""
    from lmlab.model.ngram import NgramClassifier, NgramConfig
    from lmlab.tokenizer.ngrams import NgramVocab, auto_unit

    if fields.get("head") != "classification":
        raise ConfigError(f"model.preset: {NGRAM_PRESET} is a text classifier; the {task.name} task needs a "
                          "Transformer (drop the option)")
    for option, why in (("task.vectors", cfg.task.vectors), ("lora.rank", cfg.lora.rank)):
        if why:
            raise ConfigError(f"{option}: does not apply to model.preset={NGRAM_PRESET}, a linear model over "
                              "n-grams (drop one of the two)")
    spec = {k: v for k, v in cfg.model.items() if k != "preset"}
    try:
        model_cfg = NgramConfig.from_dict({**spec, **fields})
    except ConfigError as e:
        raise ConfigError(f"model: {e}") from None
    texts = list(task.texts(train_examples))
    unit = model_cfg.unit if model_cfg.unit != "auto" else auto_unit(texts)
    n_max = model_cfg.n_max or (3 if unit == "char" else 2)
    tok_dir = work / "tokenizer"
    wanted = {"unit": unit, "n_max": n_max, "lowercase": model_cfg.lowercase, "min_count": model_cfg.min_count}
    if (tok_dir / "manifest.json").exists():  # a resumed run: the vocabulary its checkpoint was trained on
        tok = NgramVocab.load(tok_dir)
        changed = [f"model.{k}: {tok.options[k]!r} there, {v!r} here" for k, v in wanted.items() if tok.options[k] != v]
        if changed:
            raise ConfigError(f"{work.parent}: the run there built its n-grams otherwise ({'; '.join(changed)}); "
                              "give a new --out or the same options")
    else:
        tok = NgramVocab.build(texts, **wanted)
        tok.save(tok_dir, overwrite=True)
    model_cfg = model_cfg.replace(unit=unit, n_max=n_max, vocab_size=tok.vocab_size)
    model = NgramClassifier(model_cfg)
    model.set_ratios(tok.encode_batch(texts), task.label_ids(train_examples, meta))
    return model, tok, tok_dir, {"init": None, "preset": NGRAM_PRESET, "ngrams": tok.vocab_size - 1}


def finetune(task: str, train: str, eval: str | None = None, init: str | None = None,
             out: str = "out/finetune", config: str | None = None, overrides: list[str] = (),
             data_root: str | None = None) -> dict:
    """Fine-tune (or train from scratch) a task model; see the module docstring."""
    from lmlab.train import distributed as D
    from lmlab.train.checkpoint import run_lock

    T = get_task(task)
    cfg = load_finetune_config(T, bool(init), config, overrides)
    ctx = D.setup(cfg.train.device, cfg.train.dist_timeout_s)  # before the lock: a refusal ends the others too
    with run_lock(Path(out)):  # before anything is written under OUT (its tokenizer in work/)
        return _finetune(T, cfg, train, eval, init, out, data_root, ctx)


def _finetune(T, cfg: FinetuneConfig, train: str, eval: str | None, init: str | None, out: str,
              data_root: str | None, ctx) -> dict:
    from lmlab.tasks.lora import apply_lora, export_best, load_adapter, lora_state, merge_lora
    from lmlab.tasks.task import EpochSource, in_batches
    from lmlab.tasks.task_model import save_task_model
    from lmlab.train import distributed as D
    from lmlab.train.loop import Trainer
    from lmlab.train.metrics import plot_losses
    from lmlab.train.rng import seed_everything

    out_dir, work = Path(out), Path(out) / "work"
    train_ex = T.read(train, cfg.task, data_root)
    eval_ex = T.read(eval, cfg.task, data_root) if eval else []
    if not train_ex:
        raise DataError(f"{train}: no training examples")
    meta, train_fingerprint = T.meta(train_ex, cfg.task), _fingerprint(T.texts(train_ex))
    seed_everything(cfg.train.seed)
    with D.main_first(ctx, f"building {work}"):  # a trained tokenizer, an imported init model
        model, tok, tok_dir, notes = build_model(T, cfg, init, train_ex, meta, work, train_fingerprint)
    features = T.features(train_ex, tok, meta, cfg.task)
    eval_features = T.features(eval_ex, tok, meta, cfg.task) if eval_ex else []
    if cfg.lora.rank:  # before the Trainer, so that a checkpoint it resumes (A, B and their optimizer state) fits
        notes["lora"] = apply_lora(model, cfg.lora)
    if cfg.task.epochs:
        per_step = cfg.train.batch_size * cfg.train.grad_accum_steps
        cfg.train.max_steps = max(1, math.ceil(cfg.task.epochs * len(features) / per_step))
    objective = T.objective(tok, meta, cfg.task)
    source = EpochSource(features, cfg.train.batch_size, cfg.train.seed, cfg.task.group_by_length)
    evals = (lambda: in_batches(eval_features, cfg.train.batch_size)) if eval_features else None
    subset = eval_ex[:cfg.task.eval_max_examples] if cfg.task.eval_max_examples else eval_ex
    hook = (lambda: _scalars(T.evaluate(model, tok, meta, cfg.task, subset)[0], "val_")) if eval_ex else None
    run_config = run_record(to_dict(cfg), stage=f"finetune {T.name}", train_data=train, eval_data=eval, init=init,
                            meta=meta)
    trainer = Trainer(model, objective, source, cfg.train, cfg.optim, out_dir, eval_batches=evals,
                      run_config=run_config, eval_hook=hook, export=export_best if cfg.lora.rank else None,
                      identity={"task": T.name, "tokenizer": tok.fingerprint, "seed": cfg.train.seed,
                                "train": train_fingerprint, "init": init,
                                "lora": to_dict(cfg.lora),
                                **({"vectors": cfg.task.vectors} if cfg.task.vectors else {})})
    summary = trainer.fit()
    if summary["preempted"]:  # SIGTERM: the checkpoint is written; the run resumes, nothing is final yet
        return {**summary, "task": T.name, "resume": f"run the same command again to continue from {out_dir}"}
    if not ctx.is_main:  # rank 0 writes the model and evaluates it
        D.teardown(ctx)
        return {**summary, "task": T.name}
    model = trainer.model.cpu()
    best = out_dir / "best"
    if trainer.best is not None and cfg.lora.rank and (best / "adapter.safetensors").exists():
        load_adapter(model, load_tensors(best / "adapter.safetensors"))  # the base is frozen: only it moved
    elif trainer.best is not None and (best / "model.safetensors").exists():
        model.load_state_dict(load_tensors(best / "model.safetensors"), strict=True)  # same modules
    extra, info = {}, {}
    if cfg.lora.rank:
        extra["adapter.safetensors"] = lora_state(model)
        info["lora"] = {**to_dict(cfg.lora), "base": notes.get("init")}
        model = merge_lora(model)
    save_task_model(model, out_dir / "model", tok_dir, T, meta, cfg.task, run_config, extra, info)
    for name, examples in (("train_data_report", train_ex), ("eval_data_report", eval_ex)):
        if getattr(examples, "report", None):
            summary[name] = examples.report
    summary.update(task=T.name, model=str(out_dir / "model"), train_examples=len(train_ex),
                   parameters=sum(p.numel() for p in model.parameters()), **notes)
    if eval_ex:
        from lmlab.tasks.evaluate import write_evaluation

        metrics, records = T.evaluate(model, tok, meta, cfg.task, eval_ex)
        write_evaluation(T, metrics, records, out_dir / "eval.json", {"model": str(out_dir / "model"), "data": eval})
        summary["eval"] = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    plot = plot_losses(out_dir / "metrics.jsonl", out_dir / "loss.png", f"finetune {T.name}")
    summary["loss_plot"] = str(plot) if plot else None
    write_json(out_dir / "summary.json", summary)
    D.teardown(ctx)
    return summary

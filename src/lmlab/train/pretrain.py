"""`lmlab pretrain`: self-supervised pretraining from raw text to a model directory.

    lmlab pretrain --config configs/pretrain/shakespeare-char.yaml --out out/shakespeare
    torchrun --nproc-per-node=2 -m lmlab pretrain --config RECIPE.yaml --out DIR

The data section names where tokens come from, and the missing stages run into
``OUT/data/`` (each reused when already complete there; ``OUT/data/data_config.json`` records
the options they were built with, and a run with other options is refused by field rather than
fed stale data), after the run lock on OUT is taken; under torchrun by rank 0 alone, while the
other ranks wait and then read what it built:
    data.dataset  a named text dataset under $LMLAB_DATA (tinyshakespeare: its 90 %/10 % split)
    data.inputs   raw files or globs (relative ones under $LMLAB_DATA) → `lmlab corpus clean`
    data.corpus   a cleaned corpus directory
    → tokenizer (data.tokenizer, or trained: data.tokenizer_kind, data.vocab_size)
    → token shards (data.shards, or `lmlab data shard`)
Then the model is built from ``model.preset`` plus any TransformerConfig field (or, with
``init: MODEL_DIR`` or ``hf:HF_DIR``, continued from that model with its tokenizer: domain- or
task-adaptive pretraining), trained by
the one loop (`lmlab.train.loop`) and written to ``OUT/model`` (an lmlab model directory with
its tokenizer) with ``OUT/metrics.jsonl``, ``OUT/loss.png`` and ``OUT/summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmlab.artifacts import ArtifactWriter, claim, read_manifest, write_json
from lmlab.config import check, load_config, run_record, to_dict
from lmlab.errors import ConfigError, LmlabError
from lmlab.train.loop import TrainConfig, Trainer
from lmlab.train.optim import OptimConfig


@dataclass
class DataConfig:
    dataset: str | None = None  # tinyshakespeare
    inputs: list[str] = field(default_factory=list)  # raw text files/globs to clean
    text_field: str = "text"  # the text's key or column in JSONL/CSV/TSV inputs (ChnSentiCorp: text_a)
    corpus: str | None = None  # a cleaned corpus directory
    valid_fraction: float = 0.01  # documents held out when cleaning `inputs`
    tokenizer: str | None = None  # a trained tokenizer directory; else one is trained
    tokenizer_kind: Literal["bpe", "wordpiece", "unigram", "char"] = "bpe"
    vocab_size: int = 8000
    lowercase: bool = False  # wordpiece: an uncased vocabulary (BERT uncased)
    shards: str | None = None  # ready token shards
    block_size: int = 256  # tokens per training sequence
    max_documents: int = 0  # tokenizer training: documents read (0 = all)

    def __post_init__(self) -> None:
        sources = [bool(self.dataset), bool(self.inputs), bool(self.corpus), bool(self.shards)]
        check(sum(sources) == 1, "data", "give exactly one of dataset, inputs, corpus, shards")
        check(self.block_size >= 2, "data.block_size", "must be >= 2")


@dataclass
class PretrainConfig:
    objective: Literal["clm", "mlm", "denoise"] = "clm"
    model: dict[str, Any] = field(default_factory=dict)  # preset (default gpt2-tiny) + overrides
    init: str = ""  # continue pretraining this model (MODEL_DIR or hf:HF_DIR), tokenizer included
    data: DataConfig = field(default_factory=lambda: DataConfig(dataset="tinyshakespeare"))
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mlm_probability: float = 0.15
    whole_word_masking: Literal["none", "wordpiece", "chinese"] = "none"
    init_vectors: str = ""  # word-vectors directory (`lmlab embed train`) initialising the token embeddings

    def __post_init__(self) -> None:
        if self.init:
            check(not self.model, "model", "init continues the model of its directory; drop the model section")
            check(not self.data.tokenizer, "data.tokenizer", "init brings its model's tokenizer; drop data.tokenizer")
            check(not self.init_vectors, "init_vectors", "init brings its own embeddings; drop one of the two")
        else:
            self.model = {"preset": "gpt2-tiny", **self.model}
        check(0 < self.mlm_probability < 1, "mlm_probability", "must be in (0, 1)")


# -- data stages -------------------------------------------------------------------------------

def _complete(path: Path, kind: str) -> bool:
    try:
        read_manifest(path, kind)
        return True
    except LmlabError:
        return False


def dataset_corpus(name: str, out: Path) -> Path:
    """A corpus directory from a named dataset that comes with its own split."""
    from lmlab.corpus.pipeline import KIND
    from lmlab.datasets import tinyshakespeare

    if name != "tinyshakespeare":
        raise ConfigError(f"data.dataset: {name!r} is not a pretraining text with a fixed split; "
                          "use data.inputs with its files instead")
    if not _complete(out, KIND):
        with ArtifactWriter(out, kind=KIND, overwrite=True, config={"dataset": name}) as w:
            for split in ("train", "valid"):  # one document per split: the text, newlines kept
                (w.path / f"{split}-00000.jsonl").write_text(
                    json.dumps({"text": tinyshakespeare(split)}, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


DATA_RECORD = "data_config.json"


def data_options(cfg: PretrainConfig) -> dict[str, Any]:
    """The options that decide what OUT/data holds, by their override names."""
    d = cfg.data
    if d.shards:
        return {}  # ready shards: OUT/data is not used
    if d.dataset:
        options: dict[str, Any] = {"data.dataset": d.dataset}
    elif d.inputs:
        options = {"data.inputs": list(d.inputs), "data.text_field": d.text_field,
                   "data.valid_fraction": d.valid_fraction}
    else:
        options = {"data.corpus": d.corpus}
    if cfg.init:
        options["init"] = cfg.init  # its tokenizer (an hf: one is imported into OUT/hf-import)
    elif d.tokenizer:
        options["data.tokenizer"] = d.tokenizer
    else:
        options.update({"data.tokenizer_kind": d.tokenizer_kind, "data.vocab_size": d.vocab_size,
                        "data.lowercase": d.lowercase, "data.max_documents": d.max_documents})
    return options


def claim_data(cfg: PretrainConfig, out: Path) -> None:
    """Refuse OUT/data built with other options (naming each field); record them before a first build."""
    if want := data_options(cfg):
        claim(out / "data", want, DATA_RECORD)


def prepare_data(cfg: PretrainConfig, out: Path, tokenizer: Path | None = None) -> tuple[Path, Path]:
    """→ (token shards directory, tokenizer directory), building what is missing; `tokenizer`
    (an init model's) replaces data.tokenizer."""
    from lmlab.corpus.pipeline import KIND as CORPUS_KIND
    from lmlab.corpus.pipeline import clean_corpus
    from lmlab.data.shards import KIND as SHARDS_KIND
    from lmlab.data.shards import shard_corpus
    from lmlab.datasets import data_root
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.tokenizer.train import train_tokenizer

    d, work = cfg.data, out / "data"
    if d.shards:
        if tokenizer is not None:
            made_with = read_manifest(Path(d.shards), SHARDS_KIND)["tokenizer_fingerprint"]
            if made_with != Tokenizer.load(tokenizer).fingerprint:
                raise ConfigError(f"data.shards: {d.shards} were tokenized with another tokenizer than init "
                                  f"{cfg.init}'s; shard the corpus with the init model's tokenizer, or give "
                                  "data.inputs")
        return Path(d.shards), Path(d.shards) / "tokenizer"
    if d.dataset:
        corpus = dataset_corpus(d.dataset, work / "corpus")
    elif d.inputs:
        corpus = work / "corpus"
        if not _complete(corpus, CORPUS_KIND):
            root = data_root() if any(not Path(p).is_absolute() and not Path(p).exists() for p in d.inputs) else None
            inputs = [p if Path(p).is_absolute() or Path(p).exists() or root is None else str(root / p)
                      for p in d.inputs]
            over = [f"--split.valid={d.valid_fraction}", f"--read.field={d.text_field}"]
            clean_corpus(inputs, corpus, overrides=over, overwrite=True)
    else:
        corpus = Path(d.corpus)
    given = tokenizer or (Path(d.tokenizer) if d.tokenizer else None)
    tokenizer = given or work / "tokenizer"
    if given is None and not _complete(tokenizer, "lmlab-tokenizer"):
        over = [f"--max_documents={d.max_documents}"]
        if d.tokenizer_kind == "char":
            over.append("--min_frequency=1")
        if d.lowercase:
            over.append("--lowercase=true")
        train_tokenizer(corpus, tokenizer, kind=d.tokenizer_kind, vocab_size=d.vocab_size, overrides=over,
                        overwrite=True)
    shards = work / "shards"
    if not _complete(shards, SHARDS_KIND):
        shard_corpus(corpus, tokenizer, shards, overwrite=True)
    return shards, tokenizer


# -- objective wiring --------------------------------------------------------------------------

def _objective_and_data(cfg: PretrainConfig, shards: Path, tok, model_cfg):
    from lmlab.data.samplers import CausalBlockSampler, MaskedSequenceSampler, iter_eval_blocks
    from lmlab.data.shards import TokenShards
    from lmlab.train import objectives as O

    t = cfg.train
    train = TokenShards(shards, "train")
    valid = TokenShards(shards, "valid") if (shards / "valid").is_dir() else None
    block = cfg.data.block_size
    if cfg.objective == "clm":
        source = CausalBlockSampler(train, block, t.batch_size, seed=t.seed)
        evals = (lambda: iter_eval_blocks(valid, block, t.batch_size)) if valid else None
        return O.CausalLM(), source, evals, valid
    pad = tok.pad_id if tok.pad_id is not None else 0
    tok.require("mask", f"objective {cfg.objective}")
    cls_sep = (tok.cls_id, tok.sep_id) if cfg.objective == "mlm" else (None, None)
    source = MaskedSequenceSampler(train, block, t.batch_size, pad, *cls_sep, seed=t.seed)
    evals = None
    if valid is not None:
        val_sampler = MaskedSequenceSampler(valid, block, t.batch_size, pad, *cls_sep, seed=t.seed, shuffle=False)
        evals = val_sampler.iter_epoch
    specials = [i for i in (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.bos_id, tok.eos_id,
                            tok.unk_id) if i is not None]
    if cfg.objective == "mlm":
        words = None
        if cfg.whole_word_masking != "none":
            vocab = [tok.id_to_token(i) or "" for i in range(tok.vocab_size)]
            words = O.word_start_fn(vocab, chinese=cfg.whole_word_masking == "chinese")
        return O.MaskedLM(model_cfg.vocab_size, tok.mask_id, specials, t.seed, cfg.mlm_probability, words), \
            source, evals, valid
    start = tok.bos_id if tok.bos_id is not None else pad
    return O.Denoising(tok.mask_id, pad, start, t.seed), source, evals, valid


def _bytes_per_token(valid, tok, limit: int = 200_000) -> float | None:
    if valid is None or valid.num_tokens == 0:
        return None
    ids = [int(i) for shard in valid.shards for i in shard[:limit]][:limit]
    text = tok.decode(ids, skip_special_tokens=True)
    return len(text.encode("utf-8")) / max(1, len(ids))


_HEADS = {"clm": "clm", "mlm": "mlm", "denoise": "seq2seq"}


def build_model_config(cfg: PretrainConfig, vocab_size: int, pad_id: int | None):
    from lmlab.model.config import preset

    fields = dict(cfg.model)
    name = fields.pop("preset")
    head = _HEADS[cfg.objective]
    fields.setdefault("vocab_size", vocab_size)
    fields.setdefault("pad_token_id", pad_id)
    fields.setdefault("head", head)
    fields.setdefault("max_seq_len", max(cfg.data.block_size, 64))
    try:
        model_cfg = preset(name, **fields)
    except ConfigError as e:
        raise ConfigError(f"model: {e}") from None
    _check_fits(model_cfg, cfg, vocab_size, "model")
    return model_cfg


def _check_fits(model_cfg, cfg: PretrainConfig, vocab_size: int, where: str) -> None:
    if model_cfg.vocab_size < vocab_size:
        raise ConfigError(f"{where}: vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's {vocab_size}")
    if model_cfg.max_seq_len < cfg.data.block_size:
        raise ConfigError(f"{where}: max_seq_len={model_cfg.max_seq_len} < data.block_size={cfg.data.block_size}; "
                          "lower data.block_size")


def continued_model(cfg: PretrainConfig, init_dir: Path, tok):
    """The init model with the objective's head (kept when it already has it)."""
    from lmlab.model.pretrained import model_from_init

    model, fresh = model_from_init(init_dir, {"head": _HEADS[cfg.objective]})
    _check_fits(model.config, cfg, tok.vocab_size, f"init {cfg.init}")
    return model, fresh


def pretrain(config: str | None = None, out: str = "out/pretrain", overrides: list[str] = ()) -> dict:
    """Run a pretraining recipe; resumable (train.resume=auto) from OUT/checkpoints."""
    from lmlab.train import distributed as D
    from lmlab.train.checkpoint import run_lock

    cfg = load_config(PretrainConfig, config, overrides)
    ctx = D.setup(cfg.train.device, cfg.train.dist_timeout_s)  # before the lock: a refusal ends the others too
    with run_lock(Path(out)):  # before anything is written under OUT: its data too
        return _pretrain(cfg, Path(out), ctx)


def _pretrain(cfg: PretrainConfig, out_dir: Path, ctx) -> dict:
    from lmlab.model import Transformer, save_model
    from lmlab.model.summary import flops_per_token
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.train.metrics import plot_losses
    from lmlab.train import distributed as D
    from lmlab.train.rng import seed_everything
    from lmlab.hf.init_source import resolve_init

    with D.main_first(ctx, f"building {out_dir / 'data'}"):  # the other ranks find it built
        out_dir.mkdir(parents=True, exist_ok=True)
        claim_data(cfg, out_dir)
        init_dir = resolve_init(cfg.init, out_dir)
        shards, tok_dir = prepare_data(cfg, out_dir, init_dir / "tokenizer" if init_dir else None)
    tok = Tokenizer.load(tok_dir)
    seed_everything(cfg.train.seed)
    if init_dir is not None:
        model, fresh = continued_model(cfg, init_dir, tok)
        model_cfg = model.config
    else:
        model_cfg = build_model_config(cfg, tok.vocab_size, tok.pad_id)
        model, fresh = Transformer(model_cfg), None
    objective, source, evals, valid = _objective_and_data(cfg, shards, tok, model_cfg)
    vectors = None
    if cfg.init_vectors:  # before the Trainer: a resumed run then overwrites these rows with its checkpoint
        from lmlab.embeddings.initialize import init_model_embeddings

        vectors = init_model_embeddings(model, tok, cfg.init_vectors)
    run_config = run_record(to_dict(cfg), stage="pretrain", model=to_dict(model_cfg))
    trainer = Trainer(model, objective, source, cfg.train, cfg.optim, out_dir, eval_batches=evals,
                      run_config=run_config, bytes_per_token=_bytes_per_token(valid, tok),
                      flops_per_token=flops_per_token(model_cfg, cfg.data.block_size, training=True,
                                                      scored_fraction=cfg.mlm_probability if cfg.objective == "mlm"
                                                      else 1.0),
                      identity={"tokenizer": tok.fingerprint, "objective": cfg.objective,
                                "block_size": cfg.data.block_size, "seed": cfg.train.seed,
                                "train_tokens": source.shards.num_tokens,
                                **({"init_vectors": cfg.init_vectors} if cfg.init_vectors else {}),
                                **({"init": str(init_dir)} if init_dir else {})})
    summary = trainer.fit()
    if trainer.ctx.is_main:
        save_model(model.cpu(), out_dir / "model", tokenizer_dir=tok_dir, overwrite=True,
                   stage_config=run_config)
        plot = plot_losses(out_dir / "metrics.jsonl", out_dir / "loss.png",
                           f"{cfg.model.get('preset', init_dir)} · {cfg.objective}")
        summary.update(model=str(out_dir / "model"), parameters=sum(p.numel() for p in model.parameters()),
                       loss_plot=str(plot) if plot else None, **({"vectors": vectors} if vectors else {}),
                       **({"init": str(init_dir), "new_tensors": fresh} if init_dir else {}))
        write_json(out_dir / "summary.json", summary)
    D.teardown(trainer.ctx)
    return summary

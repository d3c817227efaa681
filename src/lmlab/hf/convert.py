"""`lmlab hf import` and `lmlab hf export`: Hugging Face model directories on disk ↔ lmlab.

Neither direction needs `transformers`: both read and write config.json and safetensors.
Import is safe by default: a directory that asks for custom code (``auto_map``) is refused,
``pytorch_model.bin`` (pickle) is read only with ``allow_pickle=True`` and then through
``torch.load(weights_only=True)``, and remote repositories are never contacted. Every
checkpoint tensor must be consumed and every lmlab parameter filled.

Import also brings the directory's tokenizer (tokenizer.json, BERT's vocab.txt, or Marian's
SentencePiece models converted to tokenizer.json by `lmlab.tokenizer.marian`, with the
special-token roles of special_tokens_map.json / tokenizer_config.json) into the model's
``tokenizer/``, so that every text command (finetune, evaluate, predict, generate, serve, viz)
works on the imported directory alone.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from lmlab.artifacts import ArtifactWriter, inside, load_tensors, read_json, save_tensors, write_json
from lmlab.errors import ArtifactCorrupt, ArtifactError, ConfigError, UnsafeFormat
from lmlab.hf.mapping import (ARCHITECTURES, EXPORT_ARCHITECTURE, config_from_hf, config_to_hf,
                              family_of, from_hf_state, to_hf_state)
from lmlab.model.pretrained import load_model, load_state, require_transformer, resolve_model_dir, save_model
from lmlab.model.transformer import Transformer

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "spiece.model", "source.spm",
                   "target.spm", "sentencepiece.bpe.model", "chat_template.jinja")


def tokenizer_sources(hf_dir: Path) -> list[Path]:
    """The tokenizer files of `hf_dir`. A symlink may lead to another file of the directory or,
    in a Hugging Face cache snapshot (…/snapshots/REV/FILE), to the cache's …/blobs/; one that
    leads anywhere else is refused: copying it would put an unrelated file into the output."""
    root = hf_dir.resolve()
    blobs = root.parent.parent / "blobs" if root.parent.name == "snapshots" else None
    files = []
    for name in TOKENIZER_FILES:
        path = hf_dir / name
        if not path.is_file():
            continue
        target = path.resolve()
        if inside(hf_dir, name) is None and not (blobs is not None and target.is_relative_to(blobs)):
            raise ArtifactError(f"{path}: a symlink to {target}, outside {hf_dir}; copy the file into the "
                                "directory if it belongs to this model")
        files.append(path)
    return files


def read_hf_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.exists():
        raise ArtifactError(f"{hf_dir}: no config.json; is this a Hugging Face model directory?")
    hf = read_json(path)
    if "auto_map" in hf:
        raise UnsafeFormat(f"{path}: asks for custom model code (auto_map); lmlab never runs "
                           "code from a model directory (trust_remote_code)")
    return hf


def read_hf_weights(hf_dir: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    if (hf_dir / "model.safetensors").exists():
        return load_tensors(hf_dir / "model.safetensors")
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        tensors = {}
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            if "/" in shard or "\\" in shard or shard.startswith("."):
                raise ArtifactError(f"{index}: shard name {shard!r} points outside the directory")
            tensors.update(load_tensors(hf_dir / shard))
        return tensors
    if (hf_dir / "pytorch_model.bin").exists():
        if not allow_pickle:
            raise UnsafeFormat(f"{hf_dir}: only pytorch_model.bin (a pickle, which can run code when read) "
                               "is present; convert it to safetensors, or pass --allow-pickle if you trust it")
        try:
            tensors = torch.load(hf_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses code as pickle.UnpicklingError; bad bytes raise others
            raise UnsafeFormat(f"{hf_dir / 'pytorch_model.bin'}: not a plain tensor checkpoint, refused "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        if not isinstance(tensors, dict) or not all(torch.is_tensor(v) for v in tensors.values()):
            raise ArtifactCorrupt(f"{hf_dir / 'pytorch_model.bin'}: holds no dictionary of tensors")
        return tensors
    raise ArtifactError(f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def import_hf(hf_dir: str | Path, out_dir: str | Path, allow_pickle: bool = False,
              overwrite: bool = False) -> dict:
    """Hugging Face directory → lmlab model directory. Returns a summary."""
    hf_dir = Path(hf_dir)
    hf = read_hf_config(hf_dir)
    arch = (hf.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{hf_dir / 'config.json'}: architecture {arch!r} is not supported; "
                          f"lmlab imports {', '.join(sorted(ARCHITECTURES))}")
    family, head, prefix = ARCHITECTURES[arch]
    tensors = read_hf_weights(hf_dir, allow_pickle)
    cfg = config_from_hf(hf, family, head)
    if family == "bert" and head == "mlm":  # BertForMaskedLM has no pooler, BertForPreTraining has one
        cfg = cfg.replace(pooler=any(k.startswith(f"{prefix}pooler.") for k in tensors))
    state, ignored = from_hf_state(tensors, cfg, family, prefix)
    model = Transformer(cfg)
    load_state(model, state, str(hf_dir))
    with tempfile.TemporaryDirectory(prefix="lmlab-tok-") as tmp:
        tok = import_tokenizer(hf_dir, Path(tmp) / "tokenizer")
        if family == "marian" and tok and "kind" in tok:
            check_marian_ids(hf, Path(tmp) / "tokenizer", hf_dir)
        save_model(model, out_dir, tokenizer_dir=Path(tmp) / "tokenizer" if tok else None, overwrite=overwrite,
                   stage_config={"stage": "hf import", "source": str(hf_dir.resolve()), "architecture": arch})
    return {"out": str(out_dir), "architecture": arch, "family": family, "head": head,
            "tensors": len(tensors), "ignored": ignored,
            "tokenizer": tok or "none (the directory has no tokenizer files: text commands will not work)"}


def check_marian_ids(hf: dict, tok_dir: Path, hf_dir: Path) -> None:
    """config.json's pad and eos ids must be the tokenizer's: lmlab pads, starts the decoder and
    stops generating by the tokenizer's roles, transformers by config.json's ids."""
    from lmlab.tokenizer.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_dir, verify_hashes=False)
    for role, field in (("pad", "pad_token_id"), ("eos", "eos_token_id")):
        want, got = hf.get(field), tok.special_ids.get(role)
        if want is not None and got != want:
            raise ConfigError(f"{hf_dir / 'config.json'}: {field} is {want} but the tokenizer's {role} token "
                              f"({tok.special_tokens.get(role)!r}, named in tokenizer_config.json) has id {got} in "
                              "vocab.json; the two files must agree")


def import_tokenizer(hf_dir: Path, out: Path) -> dict | None:
    """The Hugging Face tokenizer files of `hf_dir` as an lmlab tokenizer directory: the files
    unchanged (`lmlab hf export` writes them back) + lmlab_tokenizer.json with the kind and the
    special-token roles named in special_tokens_map.json / tokenizer_config.json (+ a
    tokenizer.json built from vocab.txt when there is none, or from Marian's source.spm and
    vocab.json, with target_tokenizer.json from its target.spm). None when there are no files;
    files lmlab cannot read are copied with ``"readable": false`` and the reason."""
    from lmlab.tokenizer.marian import is_marian
    from lmlab.tokenizer.tokenizer import KIND, Tokenizer

    files = tokenizer_sources(hf_dir)
    if not files:
        return None
    with ArtifactWriter(out, kind=KIND, overwrite=True) as w:
        for f in files:
            shutil.copy2(f, w.path / f.name)
        try:
            tok = Tokenizer.from_hf_files(w.path)
        except ArtifactError as e:
            return {"files": [f.name for f in files], "readable": False, "reason": str(e)}
        if is_marian(w.path) or not (w.path / "tokenizer.json").exists():
            tok.write(w.path)
        else:
            write_json(w.path / "lmlab_tokenizer.json", tok.meta)
    summary = {"kind": tok.kind, "vocab_size": tok.vocab_size, "special_tokens": tok.special_tokens,
               "files": sorted(p.name for p in out.iterdir() if p.name != "manifest.json")}
    if "pieces_not_in_vocab" in tok.meta:  # Marian: MarianTokenizer gives <unk> for them, lmlab never chooses them
        summary["pieces_not_in_vocab"] = tok.meta["pieces_not_in_vocab"]
    return summary


def marian_generation_config(cfg, tok_dir: Path) -> dict:
    """generation_config.json of an exported encoder–decoder: transformers' `generate` then decodes
    as lmlab does: from <pad>, stopping at the tokenizer's eos, never choosing <pad> (opus-mt's
    checkpoints ban it the same way) unless it is also the eos."""
    from lmlab.tokenizer.tokenizer import Tokenizer

    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    eos = Tokenizer.load(tok_dir, verify_hashes=False).special_ids.get("eos") if tok_dir.is_dir() else None
    out = {"decoder_start_token_id": pad, "pad_token_id": pad, "eos_token_id": eos, "forced_eos_token_id": eos,
           "max_length": cfg.max_seq_len}
    if pad != eos:
        out["bad_words_ids"] = [[pad]]
    return out


def export_hf(model_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """lmlab model directory → directory that `transformers` loads with from_pretrained."""
    model_dir = resolve_model_dir(model_dir)
    model = load_model(model_dir)
    cfg = require_transformer(model.config, str(model_dir), "a Hugging Face export")
    family = family_of(cfg)
    arch = EXPORT_ARCHITECTURE[(family, cfg.head)]
    prefix = ARCHITECTURES[arch][2]
    state = to_hf_state(model.state_dict(), cfg, family, prefix)
    with ArtifactWriter(out_dir, kind="hf-model", overwrite=overwrite,
                        config={"stage": "hf export", "source": str(model_dir.resolve())}) as w:
        write_json(w.path / "config.json", config_to_hf(cfg, family, arch))
        save_tensors(state, w.path / "model.safetensors", metadata={"format": "pt"})
        tok = model_dir / "tokenizer"
        if family == "marian":
            write_json(w.path / "generation_config.json", marian_generation_config(cfg, tok))
        if tok.is_dir():
            for f in tok.iterdir():
                if f.is_file() and inside(tok, f.name) is None:
                    raise ArtifactError(f"{f}: a symlink to {f.resolve()}, outside {tok}; the tokenizer's "
                                        "files belong in its directory")
                if f.is_file() and f.name not in ("manifest.json", "config.yaml"):
                    shutil.copy2(f, w.path / f.name)
    return {"out": str(out_dir), "architecture": arch, "family": family, "tensors": len(state)}

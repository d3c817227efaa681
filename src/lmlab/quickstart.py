"""`lmlab quickstart`: the whole pipeline on a built-in default, in minutes on a laptop CPU.

The default corpus is one every Python installation carries: the docstrings of the standard
library (English prose about programming, a few MB; no third-party text ships with lmlab).
``--data tinyshakespeare`` (from $LMLAB_DATA) uses a real dataset instead. Stages, each the
same library function that its own CLI command calls, each writing into OUT/:

    corpus/        lmlab corpus clean        normalise, filter, deduplicate, split
    tokenizer-*/   lmlab tokenizer train     byte-level BPE for GPT, WordPiece for BERT
    vectors/       lmlab embed train         word2vec, with nearest neighbours (the embed extra)
    gpt/           lmlab pretrain            a small GPT (causal LM), then a sample from it
    bert/          lmlab pretrain            a small BERT (masked LM)
    classifier/    lmlab finetune            the BERT fine-tuned to tell class from function
                                             docstrings, with accuracy/precision/recall/F1
    models/        lmlab model / hf export   the four families from the formulas, attention
                                             paths compared, exported and reloaded by transformers
    report.md      figures of every stage, and the loss curves as PNG files
"""

from __future__ import annotations

import ast
import json
import sysconfig
import time
from pathlib import Path

import torch

from lmlab.artifacts import write_json
from lmlab.hf.convert import export_hf
from lmlab.model import Transformer, load_model, preset, save_model
from lmlab.model.summary import count_parameters

FAMILIES = {"bert": "BertForMaskedLM", "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
            "transformer": "MarianMTModel"}
SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "ensurepip"}


def stdlib_docstrings(out: Path, labelled: Path, max_chars: int = 3_000_000) -> dict:
    """Write the standard library's docstrings as JSONL documents (the built-in corpus), and the
    class and function docstrings labelled "class"/"function" (the built-in classification task:
    does this docstring describe a class or a function?), split 90/10 by a hash of the text."""
    import hashlib

    root = Path(sysconfig.get_paths()["stdlib"])
    docs, chars = 0, 0
    splits = {s: open(labelled.with_name(f"{labelled.stem}-{s}.jsonl"), "w", encoding="utf-8")
              for s in ("train", "dev")}
    with open(out, "w", encoding="utf-8") as f:
        for path in sorted(root.rglob("*.py")):
            if SKIP_DIRS & set(path.relative_to(root).parts) or chars >= max_chars:
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 80:
                        f.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
                        docs += 1
                        chars += len(doc)
                        if not isinstance(node, ast.Module):
                            label = "class" if isinstance(node, ast.ClassDef) else "function"
                            split = "dev" if hashlib.sha256(doc.encode()).digest()[0] < 26 else "train"
                            splits[split].write(json.dumps({"text": doc[:600], "label": label}) + "\n")
    for fh in splits.values():
        fh.close()
    return {"source": str(root), "documents": docs, "characters": chars}


def _logits(model, ids: torch.Tensor, seq2seq: bool) -> torch.Tensor:
    """The same call for lmlab and Hugging Face models (an encoder-decoder decodes `ids` too)."""
    return (model(ids, decoder_input_ids=ids) if seq2seq else model(ids)).logits


def check_family(family: str, work: Path) -> dict:
    """Build a tiny model of `family`, compare attention paths, export and reload it."""
    cfg = preset(f"{family}-tiny", vocab_size=1000, max_seq_len=64, dropout=0.0, attn_dropout=0.0)
    model = Transformer(cfg).eval()
    formula = Transformer(cfg.replace(attention_impl="formula")).eval()
    formula.load_state_dict(model.state_dict())
    ids = torch.randint(1, cfg.vocab_size, (3, 31))
    seq2seq = cfg.arch == "encoder-decoder"
    with torch.no_grad():
        fused_logits = _logits(model, ids, seq2seq)
        formula_diff = (fused_logits - _logits(formula, ids, seq2seq)).abs().max().item()
    row = {"family": family, **count_parameters(cfg), "formula_vs_fused_max_abs_diff": formula_diff}
    save_model(model, work / family)
    export_hf(work / family, work / f"{family}-hf")
    row.update(hf_reload(work / f"{family}-hf", FAMILIES[family], ids, fused_logits, seq2seq))
    return row


def hf_reload(hf_dir: Path, cls_name: str, ids: torch.Tensor, expected: torch.Tensor, seq2seq: bool) -> dict:
    try:
        import transformers
    except ImportError:
        return {"hf_reload": "skipped: install the hf extra (pip install -e '.[hf]')"}
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = getattr(transformers, cls_name).from_pretrained(hf_dir).eval()
    with torch.no_grad():
        diff = (_logits(model, ids, seq2seq) - expected).abs().max().item()
    return {"hf_class": cls_name, "hf_max_abs_diff": diff}


def _sample(model_dir: Path, prompt: str, n: int = 120) -> str:
    """Top-k sampling from a pretrained causal LM (the same call as `lmlab generate`)."""
    from lmlab.generate import generate, load_for_generation

    model, tok = load_for_generation(model_dir)
    return prompt + generate(model, tok, prompt, max_new_tokens=n, temperature=0.8, top_k=20, seed=0).text


def word_vectors(corpus: Path, out: Path) -> dict:
    """Word2Vec skip-gram on the corpus, and the nearest neighbours of a few words."""
    try:
        from lmlab.embeddings.train import train_embeddings
        from lmlab.embeddings.vectors import WordVectors
    except ImportError as e:
        return {"skipped": f"install the embed extra ({e.name} missing)"}
    stats = train_embeddings([str(corpus)], str(out), algo="word2vec", dim=64, epochs=3, min_count=3,
                             window=5, seed=0, threads=2, progress=False)
    wv = WordVectors.load(out)
    neighbours = {w: [n for n, _ in wv.most_similar(w, topn=5)] for w in ("file", "string", "error", "thread")
                  if w in wv}
    return {"vocabulary": stats["vocab_size"], "neighbours": neighbours}


def builtin_corpus(out_dir: Path) -> dict:
    """The standard library's docstrings into OUT/raw (with the labelled class/function split),
    cleaned into OUT/corpus."""
    from lmlab.corpus.pipeline import clean_corpus

    raw = out_dir / "raw" / "stdlib_docstrings.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    src = stdlib_docstrings(raw, out_dir / "raw" / "class_or_function.jsonl")
    summary = clean_corpus([raw], out_dir / "corpus", overrides=["--split.valid=0.05"])
    return {**src, "cleaned": summary.get("documents_out", summary.get("documents"))}


def wordpiece(corpus: Path, out: Path) -> dict:
    """The BERT's uncased WordPiece vocabulary of 4,000 tokens."""
    from lmlab.tokenizer.train import train_tokenizer

    return train_tokenizer(corpus, out, kind="wordpiece", vocab_size=4000, overrides=["--lowercase=true"])


def _small_model(corpus: Path) -> list[str]:
    """The settings the GPT and BERT stages share: 4 layers of width 128, blocks of 128 tokens."""
    return ["--train.progress=false", "--train.eval_batches=20", "--train.log_every_steps=25",
            "--data.block_size=128", f"--data.corpus={corpus}", "--data.dataset=null", "--train.batch_size=16",
            "--model.d_model=128", "--model.n_heads=4", "--model.n_layers=4", "--model.d_ff=512",
            "--model.dropout=0.0", "--model.attn_dropout=0.0", "--optim.lr=2e-3", "--optim.warmup_steps=50"]


def bert_stage(out_dir: Path, corpus: Path, tokenizer: Path, steps: int = 0, optim: str = "muon",
               extra: tuple[str, ...] = ()) -> dict:
    """Masked-LM pretraining of the small BERT into OUT/bert. Muon, because with AdamW one
    WordPiece draw in three left it on the masked-LM unigram plateau and the classifier at the
    majority class (BENCHMARKS.md, "Quickstart"; benchmarks/bench_quickstart.py)."""
    from lmlab.train.pretrain import pretrain

    steps = steps or 300
    return pretrain(None, str(out_dir / "bert"), [
        "--objective=mlm", "--model.preset=bert-tiny", f"--data.tokenizer={tokenizer}",
        "--whole_word_masking=wordpiece", f"--optim.name={optim}", f"--train.max_steps={steps}",
        f"--train.eval_every_steps={steps // 2}", f"--train.save_every_steps={steps}", *_small_model(corpus), *extra])


def classifier(out_dir: Path, steps: int = 0, raw: Path | None = None) -> dict:
    """Fine-tune the pretrained BERT to tell class docstrings from function docstrings (the
    labelled files in `raw`, default OUT/raw)."""
    from lmlab.tasks.finetune import finetune

    raw = raw or out_dir / "raw"
    summary = finetune("sentiment", str(raw / "class_or_function-train.jsonl"),
                       str(raw / "class_or_function-dev.jsonl"), init=str(out_dir / "bert" / "model"),
                       out=str(out_dir / "classifier"),
                       overrides=["--train.progress=false", f"--train.max_steps={steps or 200}",
                                  f"--train.eval_every_steps={steps or 100}", "--train.batch_size=32",
                                  "--optim.lr=3e-4", "--optim.warmup_steps=30"])
    figures = summary.get("eval", {})
    return {k: figures[k] for k in ("accuracy", "precision", "recall", "f1", "f1_macro") if k in figures} \
        or {k: v for k, v in figures.items() if isinstance(v, float)}


def quickstart(out: str = "out/quickstart", data: str | None = None, overwrite: bool = False,
               steps: int = 0) -> str:
    """Run every stage into `out`; returns the report (also written to OUT/report.md)."""
    from lmlab.errors import ArtifactError
    from lmlab.tokenizer.train import train_tokenizer
    from lmlab.train.pretrain import pretrain

    torch.manual_seed(0)
    start = time.perf_counter()
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ArtifactError(f"{out_dir}: already exists; pass --overwrite or choose another --out")
        import shutil

        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    report: dict = {"stages": {}}
    timings = report["stages"]

    def stage(name):
        timings[name] = {"started": time.perf_counter()}
        return timings[name]

    def done(entry, **figures):
        entry["seconds"] = round(time.perf_counter() - entry.pop("started"), 1)
        entry.update(figures)

    s = stage("corpus")
    if data:
        from lmlab.train.pretrain import dataset_corpus

        corpus = dataset_corpus(data, out_dir / "corpus")
        done(s, source=data)
    else:
        corpus = out_dir / "corpus"
        done(s, **builtin_corpus(out_dir))

    s = stage("tokenizers")
    bpe = train_tokenizer(corpus, out_dir / "tokenizer-bpe", kind="bpe", vocab_size=4000)
    wp = wordpiece(corpus, out_dir / "tokenizer-wordpiece")
    done(s, bpe_vocab=bpe.get("vocab_size"), wordpiece_vocab=wp.get("vocab_size"))

    s = stage("word vectors")
    done(s, **word_vectors(corpus, out_dir / "vectors"))

    s = stage("gpt")
    gpt_steps = steps or 500
    gpt = pretrain(None, str(out_dir / "gpt"), [
        "--objective=clm", "--model.preset=gpt2-tiny", f"--data.tokenizer={out_dir / 'tokenizer-bpe'}",
        f"--train.max_steps={gpt_steps}", f"--train.eval_every_steps={gpt_steps // 3}",
        f"--train.save_every_steps={gpt_steps}", *_small_model(corpus)])
    prompt = "Return the"
    done(s, **{k: gpt.get(k) for k in ("parameters", "val_loss", "val_perplexity", "tokens_per_s")},
         sample=_sample(out_dir / "gpt" / "model", prompt))

    s = stage("bert")
    bert = bert_stage(out_dir, corpus, out_dir / "tokenizer-wordpiece", steps)
    done(s, **{k: bert.get(k) for k in ("parameters", "val_loss", "tokens_per_s")})

    s = stage("classifier")
    if not data:
        done(s, **classifier(out_dir, steps))
    else:
        done(s, skipped="the built-in classification task uses the built-in corpus")

    s = stage("export")
    ids = torch.randint(5, 4000, (2, 17))
    exported = {}
    for name, cls_name in (("gpt", "GPT2LMHeadModel"), ("bert", "BertForMaskedLM")):
        export_hf(out_dir / name / "model", out_dir / name / "hf")
        with torch.no_grad():
            expected = load_model(out_dir / name / "model")(ids).logits
        exported[name] = hf_reload(out_dir / name / "hf", cls_name, ids, expected, False)
    done(s, **exported)

    s = stage("model families")
    rows = [check_family(f, out_dir / "models") for f in FAMILIES]
    done(s, families=rows)

    report["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / "report.json", report)
    text = render(report, out_dir)
    (out_dir / "report.md").write_text(text, encoding="utf-8")
    return text


def render(report: dict, out_dir: Path) -> str:
    st = report["stages"]
    lines = ["# lmlab quickstart", "", "| stage | seconds | figures |", "|---|---|---|"]
    for name, entry in st.items():
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in entry.items()
                            if k not in ("seconds", "sample", "families"))
        lines.append(f"| {name} | {entry.get('seconds')} | {figures} |")
    if "gpt" in st:
        lines += ["", "Sample from the GPT (top-k 20, temperature 0.8):", "",
                  "> " + st["gpt"]["sample"].replace("\n", " ")]
    lines += ["", "| family | parameters | formula vs fused | Hugging Face reload |", "|---|---|---|---|"]
    for r in st.get("model families", {}).get("families", []):
        hf = f"{r['hf_class']}: max abs diff {r['hf_max_abs_diff']:.1e}" if "hf_class" in r else r["hf_reload"]
        lines.append(f"| {r['family']} | {r['parameters']:,} | {r['formula_vs_fused_max_abs_diff']:.1e} | {hf} |")
    lines += ["", f"Total {report['seconds']} s. Loss curves: {out_dir}/gpt/loss.png, {out_dir}/bert/loss.png; "
              f"models: {out_dir}/gpt/model, {out_dir}/bert/model (Hugging Face layout in …/hf)."]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)

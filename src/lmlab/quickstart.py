"""`lmlab quickstart`: the pipeline end to end on a built-in default, with a short report.

What runs today: each of the four Transformer families is built from its formulas, the
formula attention path is checked against the fused kernel, the model is saved as an lmlab
directory, exported to the Hugging Face layout and reloaded with `transformers` (when the
``hf`` extra is installed), and the figures are printed and written to ``report.json`` /
``report.md``. Later stages (corpus, tokenizer, word vectors, pretraining, fine-tuning) join
this sequence as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from lmlab.artifacts import ArtifactWriter, write_json
from lmlab.hf.convert import export_hf
from lmlab.model import Transformer, load_model, preset, save_model
from lmlab.model.summary import count_parameters, flops_per_token

FAMILIES = {"bert": "BertForMaskedLM", "gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
            "transformer": "MarianMTModel"}


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
    row = {"family": family, **count_parameters(cfg),
           "training_flops_per_token": flops_per_token(cfg, 64, training=True),
           "formula_vs_fused_max_abs_diff": formula_diff}
    save_model(model, work / family)
    export_hf(work / family, work / f"{family}-hf")
    reloaded = load_model(work / family)
    with torch.no_grad():
        row["save_load_max_abs_diff"] = (_logits(reloaded, ids, seq2seq) - fused_logits).abs().max().item()
    try:
        import transformers
    except ImportError:
        row["hf_reload"] = "skipped: install the hf extra (pip install -e '.[hf]')"
        return row
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    hf_model = getattr(transformers, FAMILIES[family]).from_pretrained(work / f"{family}-hf").eval()
    with torch.no_grad():
        row["hf_class"] = FAMILIES[family]
        row["hf_max_abs_diff"] = (_logits(hf_model, ids, seq2seq) - fused_logits).abs().max().item()
    return row


def quickstart(out: str = "out/quickstart", data: str | None = None, overwrite: bool = False) -> str:
    torch.manual_seed(0)
    start = time.perf_counter()
    out_dir = Path(out)
    with ArtifactWriter(out_dir, kind="quickstart", overwrite=overwrite,
                        config={"out": out, "data": data}) as w:
        rows = [check_family(f, w.path / "models") for f in FAMILIES]
        report = {"families": rows, "seconds": round(time.perf_counter() - start, 1)}
        write_json(w.path / "report.json", report)
        lines = ["# lmlab quickstart", "",
                 "| family | parameters | formula vs fused | save/load | Hugging Face reload |",
                 "|---|---|---|---|---|"]
        for r in rows:
            hf = (f"{r['hf_class']}: max abs diff {r['hf_max_abs_diff']:.1e}" if "hf_class" in r
                  else r["hf_reload"])
            lines.append(f"| {r['family']} | {r['parameters']:,} | {r['formula_vs_fused_max_abs_diff']:.1e} | "
                         f"{r['save_load_max_abs_diff']:.1e} | {hf} |")
        lines += ["", f"Finished in {report['seconds']} s. Artifacts: {out_dir}/models/"]
        (w.path / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return "\n".join(lines)


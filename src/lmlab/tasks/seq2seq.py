"""What summarisation and translation share: source → target pairs on an encoder–decoder.

Features: source ids inside the tokenizer's template (Marian: ``x₁ … xₘ </s>``; none for
lmlab's byte-level BPE), truncated to ``task.max_length`` with the template kept (the count of
truncated sources is reported); target ids (the target-side tokenizer where the model has one:
Marian's target.spm) truncated to ``task.seq2seq.max_target_length − 1`` then EOS. Objective
(teacher forcing): the decoder reads ``BOS y₁ … yₙ`` and predicts ``y₁ … yₙ EOS``; BOS is the
tokenizer's bos, else cls, else pad (Marian's decoder start); cross-entropy over the target
tokens. Prediction decodes with `lmlab.generate`: greedy (`DecodeLoop` at temperature 0) or beam
search (`beam_search`, Hugging Face semantics, with ``task.seq2seq.num_beams`` and
``task.seq2seq.length_penalty``); the decoder starts from BOS, EOS ends a row and is not part of
the text. At most ``task.seq2seq.max_target_length`` tokens are generated, and at most the
model's ``max_seq_len − 1`` (the start token holds a position, as in HF ``max_length``); a
training target holds at most ``max_target_length − 1`` tokens before its EOS, so that cap
(reached only when ``max_seq_len = max_target_length``) can only cut a final EOS.
From scratch the tokenizer is byte-level BPE trained on sources and targets together (one
shared vocabulary, exact round trip for any script; ``task.seq2seq.split_cjk`` keeps each Chinese
character a piece of its own); the model is ``transformer-tiny``
(Vaswani et al. 2017 at d_model 128) unless ``model.preset`` says otherwise; ``model.copy``
adds a pointer-generator that copies source tokens (`PointerGenerator` in heads.py). ``--init`` takes
an encoder–decoder lmlab model (e.g. `lmlab pretrain` with objective denoise) or an imported
Marian checkpoint (`lmlab hf import`, or ``hf:DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmlab.errors import DataError
from lmlab.tasks.records import cell, pick_column, read_records
from lmlab.tasks.task import Task, TaskConfig, in_batches, pad, pad_id_of
from lmlab.train.objectives import Prepared


@dataclass
class Pair:
    source: str
    targets: list[str] = field(default_factory=list)  # references; the first is trained on
    where: str = ""


class Seq2SeqObjective:
    name = "seq2seq"
    predicts_tokens = True  # its loss is a mean over predicted tokens

    def __init__(self, pad_id: int, bos_id: int):
        self.pad_id, self.bos_id = pad_id, bos_id

    def prepare(self, batch: list[dict], index: int) -> Prepared:
        src = pad([f["input_ids"] for f in batch], self.pad_id)
        src_mask = pad([[1] * len(f["input_ids"]) for f in batch], 0)
        dec_in = pad([[self.bos_id] + f["target_ids"][:-1] for f in batch], self.pad_id)
        dec_mask = pad([[1] * len(f["target_ids"]) for f in batch], 0)
        labels = pad([f["target_ids"] for f in batch], -100)  # [B, T']: y₁ … yₙ EOS
        return Prepared({"input_ids": src, "attention_mask": src_mask, "decoder_input_ids": dec_in,
                         "decoder_attention_mask": dec_mask, "labels": labels}, int((labels != -100).sum()))


def read_pairs(spec: str, cfg: TaskConfig, source_names, target_names) -> list[Pair]:
    """A CSV/TSV/JSONL file with a source and a target column, or ``SRC.txt,TGT.txt`` (line-aligned)."""
    if "," in spec and not Path(spec).exists():
        src_path, tgt_path = (Path(p) for p in spec.split(",", 1))
        for p in (src_path, tgt_path):
            if not p.is_file():
                raise DataError(f"{p}: no such file")
        src = src_path.read_text(encoding="utf-8").rstrip("\n").split("\n")
        tgt = tgt_path.read_text(encoding="utf-8").rstrip("\n").split("\n")
        if len(src) != len(tgt):
            raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                            "parallel files must be line-aligned")
        pairs = [Pair(s.strip(), [t.strip()], f"{src_path}:{i + 1}") for i, (s, t) in enumerate(zip(src, tgt))]
    else:
        rows = read_records(spec)
        sc = pick_column(rows, spec, cfg.text_column, source_names, "text")
        tc = pick_column(rows, spec, cfg.label_column, target_names, "label")
        pairs = []
        for i, row in enumerate(rows):
            target = row.get(tc)
            refs = [str(t).strip() for t in target] if isinstance(target, list) else [cell(row, tc, spec, i)]
            pairs.append(Pair(cell(row, sc, spec, i), refs, f"{spec}: row {i + 1}"))
    for p in pairs:
        if not p.source or not any(p.targets):
            raise DataError(f"{p.where}: empty source or target")
    return pairs


class Seq2SeqTask(Task):
    head = "seq2seq"
    default_preset = "transformer-tiny"
    tokenizer_kind = "bpe"
    recipe_name = "seq2seq"

    def max_positions(self, cfg):
        return max(cfg.max_length, cfg.seq2seq.max_target_length)

    def texts(self, examples):
        for e in examples:
            yield e.source
            yield e.targets[0]

    def _special(self, tok) -> tuple[int, int]:
        """(decoder start, end): bos, else cls, else pad (Marian's decoder_start_token_id, as
        `lmlab pretrain --objective=denoise` starts); eos, else sep."""
        start = next((i for i in (tok.bos_id, tok.cls_id, tok.pad_id) if i is not None), None)
        eos = tok.eos_id if tok.eos_id is not None else tok.sep_id
        if start is None:
            tok.require("bos", f"the {self.name} decoder (its start token; cls or pad would do too)")
        if eos is None:
            tok.require("eos", f"the {self.name} decoder (its end token; sep would do too)")
        return start, eos

    @staticmethod
    def sources(tok, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
        """(source ids, truncated or not): each text inside the tokenizer's template (Marian: ids
        </s>; as `lmlab generate` and `lmlab serve` encode a source), cut to `max_length` tokens
        with the template kept."""
        before, after = tok.template
        room = max(0, max_length - len(before) - len(after))
        ids = tok.encode_batch(texts)
        return [before + x[:room] + after for x in ids], [len(x) > room for x in ids]

    def features(self, examples, tok, meta, cfg):
        _, eos = self._special(tok)
        src, cut = self.sources(tok, [e.source for e in examples], cfg.max_length)
        tgt = tok.encode_target_batch([e.targets[0] for e in examples])
        return [{"input_ids": s, "target_ids": t[:cfg.seq2seq.max_target_length - 1] + [eos], "truncated": c}
                for s, t, c in zip(src, tgt, cut)]

    def objective(self, tok, meta, cfg):
        return Seq2SeqObjective(pad_id_of(tok), self._special(tok)[0])

    def generate(self, model, tok, cfg: TaskConfig, sources: list[str]) -> list[str]:
        from lmlab.generate import DecodeLoop, GenerationConfig, beam_search

        bos, eos = self._special(tok)
        gen = GenerationConfig(max_new_tokens=cfg.seq2seq.max_target_length, temperature=0, stop_token_ids=[eos],
                               num_beams=cfg.seq2seq.num_beams, length_penalty=cfg.seq2seq.length_penalty,
                               no_repeat_ngram_size=cfg.seq2seq.no_repeat_ngram_size)
        # the sources are token-id lists: the decoder right-pads them (pad_id) and encodes once;
        # vocab_limit keeps ids the tokenizer cannot decode (a padded model vocabulary) out
        common = dict(decoder_start_id=bos, pad_id=pad_id_of(tok), vocab_limit=tok.vocab_size)
        training = model.training
        model.eval()  # dropout would make decoding random; the caller's mode is restored after
        out = []
        try:
            for chunk in in_batches(sources, cfg.predict_batch_size):
                ids = self.sources(tok, chunk, cfg.max_length)[0]
                if cfg.seq2seq.num_beams > 1:
                    seqs = [h.token_ids for h in beam_search(model, ids, gen, [eos], **common)]
                else:
                    loop = DecodeLoop(model, ids, gen, **common)
                    for _ in loop:
                        pass
                    seqs = loop.generated
                for seq in seqs:
                    seq = seq[:-1] if seq and seq[-1] == eos else seq  # a stop token ends the row, not the text
                    out.append(tok.decode(seq, skip_special_tokens=True).strip())
        finally:
            model.train(training)
        return out

    def score(self, predictions: list[str], references: list[list[str]], cfg: TaskConfig) -> dict:
        raise NotImplementedError

    def evaluate(self, model, tok, meta, cfg, examples):
        if not examples:
            raise DataError("no examples to evaluate")
        preds = self.generate(model, tok, cfg, [e.source for e in examples])
        metrics = self.score(preds, [e.targets for e in examples], cfg)
        metrics["truncated_sources"] = sum(self.sources(tok, [e.source for e in examples], cfg.max_length)[1])
        metrics["decoding"] = {"num_beams": cfg.seq2seq.num_beams, "length_penalty": cfg.seq2seq.length_penalty,
                               "no_repeat_ngram_size": cfg.seq2seq.no_repeat_ngram_size,
                               "max_target_length": cfg.seq2seq.max_target_length}
        records = [{"source": e.source, "prediction": p, "references": e.targets} for e, p in zip(examples, preds)]
        return metrics, records

    def _predict(self, model, tok, cfg, inputs, key: str):
        texts = [x if isinstance(x, str) else str(x.get("text", "")) for x in inputs]
        if any(not t.strip() for t in texts):
            raise DataError("an input text is empty")
        return [{key: p} for p in self.generate(model, tok, cfg, texts)]

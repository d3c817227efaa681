"""Machine translation: Multi30k (en ↔ de) and Tatoeba (en ↔ zh) on an encoder–decoder.

    lmlab finetune translation --train multi30k:train --eval multi30k:val --task.seq2seq.direction=de-en --out out/de-en
    lmlab finetune translation --train tatoeba:train --eval tatoeba:dev --task.seq2seq.direction=zh-en --out out/zh-en
    lmlab finetune translation --train train.en,train.de --eval val.en,val.de --out out/mt
    lmlab evaluate translation out/de-en/model --data multi30k:val --task.seq2seq.num_beams=5 \
        --task.seq2seq.length_penalty=1.0

Data: ``multi30k:train|val`` (en-de by default), ``tatoeba:train|dev`` (en-zh by default);
``task.seq2seq.direction`` reverses them. Files: ``SRC,TGT`` (two line-aligned text files; a
line-count mismatch is an error) or a CSV/TSV/JSONL with source/target columns
(``source src en`` / ``target tgt de zh``). One shared byte-level BPE vocabulary for both
languages when trained from scratch. Metric: BLEU and chrF with sacrebleu (its ``zh``
tokenizer when the target is Chinese), the signature reported with the score; best
checkpoint by BLEU. Decoding: greedy, or beam search with a length penalty (`seq2seq`, through `lmlab.generate`).
"""

from __future__ import annotations

from lmlab.errors import DataError
from lmlab.evaluation.text import bleu
from lmlab.tasks.records import dataset_spec
from lmlab.tasks.seq2seq import Pair, Seq2SeqTask, read_pairs

DATASETS = {"multi30k": ("en", "de"), "tatoeba": ("en", "zh")}


class Translation(Seq2SeqTask):
    name = "translation"
    select_metric = "bleu"

    def read(self, spec, cfg, data_root=None):
        import lmlab.datasets as datasets

        named = dataset_spec(spec)
        if not named:
            return read_pairs(spec, cfg, ("source", "src", "en", "english"),
                              ("target", "tgt", "de", "zh", "german", "chinese"))
        name, split = named
        if name not in DATASETS:
            raise DataError(f"{spec}: unknown translation dataset; use multi30k:train|val, tatoeba:train|dev or files")
        a, b = DATASETS[name]
        direction = cfg.seq2seq.direction or f"{a}-{b}"
        if direction not in (f"{a}-{b}", f"{b}-{a}"):
            raise DataError(f"task.seq2seq.direction={direction!r} does not fit {name} ({a}-{b} or {b}-{a})")
        rows = getattr(datasets, name)(split, data_root)
        flip = direction == f"{b}-{a}"
        return [Pair(r.tgt if flip else r.src, [r.src if flip else r.tgt], f"{spec}:{i + 1}")
                for i, r in enumerate(rows)]

    def score(self, predictions, references, cfg):
        return bleu(predictions, references, cfg.lang)

    def predict(self, model, tok, meta, cfg, inputs):
        return self._predict(model, tok, cfg, inputs, "translation")


TASK = Translation()

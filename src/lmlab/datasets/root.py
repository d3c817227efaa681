"""Where datasets live: ``data_root`` argument > ``LMLAB_DATA``; missing data is a clear error."""

from __future__ import annotations

import os
from pathlib import Path

from lmlab.errors import DataError

# How to obtain each dataset (the folder layout is that of the project's shared data README).
SOURCES = {
    "tinyshakespeare": ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
                        " → input.txt"),
    "imdb": ("https://ai.stanford.edu/~amaas/data/sentiment/ "
             "(aclImdb_v1.tar.gz; repack train/unsup as aclImdb_unsup.tar.gz)"),
    "wikitext-2": ("https://huggingface.co/datasets/Salesforce/wikitext "
                   "(wikitext-2-raw-v1, validation split → valid.txt)"),
    "chinese-poetry": "https://github.com/chinese-poetry/chinese-poetry (folders quantangshi/, songci/, …)",
    "sidamingzhu": "public-domain texts of 三国演义, 水浒传, 西游记, 红楼梦 as UTF-8 .txt",
    "sst2": "https://gluebenchmark.com/tasks (SST-2: train.tsv, dev.tsv)",
    "chnsenticorp": "https://www.luge.ai (ChnSentiCorp: train.tsv, dev.tsv with header label\\ttext_a)",
    "squad-v1.1": "https://rajpurkar.github.io/SQuAD-explorer/ (dev-v1.1.json)",
    "cmrc2018": "https://github.com/ymcui/cmrc2018 (cmrc2018_train.json, cmrc2018_trial.json)",
    "dialogsum": "https://github.com/cylnlp/dialogsum (dialogsum.train.jsonl, dialogsum.dev.jsonl)",
    "csl-ts": "https://github.com/CLUEbenchmark/CLGE (CSL title summarisation dev.tsv)",
    "tatoeba-cmn-eng": "https://www.manythings.org/anki/ (cmn-eng.zip, split into train.tsv/dev.tsv)",
    "multi30k": "https://github.com/multi30k/dataset (data/task1/raw: train.{en,de}.gz, val.{en,de}.gz)",
    "ca8": "https://github.com/Embedding/Chinese-Word-Vectors (testsets/CA8 → ca_translated.txt)",
    "zh-wordsim": "https://github.com/Leonard-Xu/CWE (data/240.txt)",
}


class DatasetMissing(DataError):
    """A dataset's folder or file is not under the data root."""


def data_root(root: str | Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("LMLAB_DATA")
    if env:
        return Path(env)
    raise DatasetMissing("no data root: pass --data-root DIR or set LMLAB_DATA to the folder "
                         "that holds the datasets (e.g. ../shared/data)")


_resolve_root = data_root  # for functions whose `data_root` parameter (the CLI's --data-root) shadows it


def dataset_path(name: str, filename: str, root: str | Path | None = None) -> Path:
    """The path of `filename` inside dataset `name`, or DatasetMissing saying where it looked."""
    base = data_root(root)
    path = base / name / filename
    if not path.exists():
        how = SOURCES.get(name, "see the dataset's documentation")
        origin = "the data_root argument" if root is not None else "LMLAB_DATA"
        raise DatasetMissing(f"dataset {name!r}: {path} not found (data root {base} from {origin}); "
                             f"obtain it from {how} and place it there")
    return path


# The file whose presence marks each dataset as installed.
MARKERS = {
    "tinyshakespeare": "input.txt", "imdb": "aclImdb_unsup.tar.gz", "wikitext-2": "valid.txt",
    "chinese-poetry": "quantangshi", "sidamingzhu": "红楼梦.txt", "sst2": "train.tsv", "chnsenticorp": "train.tsv",
    "squad-v1.1": "dev-articles-0-37.json", "cmrc2018": "cmrc2018_train.json", "dialogsum": "dialogsum.train.jsonl",
    "csl-ts": "dev.tsv", "tatoeba-cmn-eng": "train.tsv", "multi30k": "train.en.gz", "ca8": "ca_translated.txt",
    "zh-wordsim": "240.txt",
}


def list_datasets(data_root: str | None = None) -> str:
    """CLI: which datasets are present under the data root, and where to get the missing ones."""
    base = _resolve_root(data_root)
    rows = []
    for name, marker in MARKERS.items():
        present = (base / name / marker).exists()
        rows.append(f"{name:<16} {'ok' if present else 'MISSING':<8} "
                    f"{base / name if present else 'obtain: ' + SOURCES[name]}")
    return f"data root: {base}\n" + "\n".join(rows)

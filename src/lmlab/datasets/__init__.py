"""Typed readers for the public datasets used by lmlab, read from a data root.

The root is the ``data_root`` argument (``--data-root`` on the command line), else the
``LMLAB_DATA`` environment variable. A missing dataset raises `DatasetMissing`, whose message
says where it looked and how to obtain the files. Nothing is downloaded.

    from lmlab.datasets import sst2, cmrc2018
    rows = sst2("train")            # list[LabeledText]
    qa = cmrc2018("trial")          # list[QAExample], answer spans checked
"""

from lmlab.datasets.classification import LabeledText, chnsenticorp, sst2
from lmlab.datasets.qa import Answer, QAExample, cmrc2018, squad
from lmlab.datasets.root import DatasetMissing, data_root, dataset_path
from lmlab.datasets.seq2seq import Dialogue, TitledAbstract, TranslationPair, csl_ts, dialogsum, multi30k, tatoeba
from lmlab.datasets.text import Novel, Poem, chinese_poetry, imdb_unsup, sidamingzhu, tinyshakespeare, wikitext2
from lmlab.datasets.word_benchmarks import Analogy, WordPair, ca8, zh_wordsim

__all__ = [
    "DatasetMissing", "data_root", "dataset_path",
    "tinyshakespeare", "imdb_unsup", "wikitext2", "chinese_poetry", "sidamingzhu", "Poem", "Novel",
    "sst2", "chnsenticorp", "LabeledText", "squad", "cmrc2018", "QAExample", "Answer",
    "dialogsum", "csl_ts", "tatoeba", "multi30k", "Dialogue", "TitledAbstract", "TranslationPair",
    "ca8", "zh_wordsim", "Analogy", "WordPair",
]

"""Stage ③: word embeddings — Word2Vec and GloVe for English and Chinese, with evaluation.

| file | concept |
|---|---|
| ``vocab.py`` | corpus → tokens (words, whitespace, jieba, a tokenizer.json) → vocabulary + id stream |
| ``word2vec.py`` | Word2Vec via gensim (why: see its docstring) |
| ``glove.py`` | GloVe: bounded-memory counting, shuffling, AdaGrad training (numba) |
| ``train.py`` | ``lmlab embed train``: config + the stage function |
| ``vectors.py`` | `WordVectors`: the artifact, queries, exports (word2vec text/binary, GloVe) |
| ``evaluate.py`` | analogies (3CosAdd, 3CosMul) and word similarity (Spearman, Pearson) |
| ``plot.py`` | 2-D PCA projection PNG with CJK fonts |
| ``initialize.py`` | fill a model's token-embedding matrix from word vectors |

Heavy imports (gensim, numba, jieba, matplotlib) happen only in the files that need them.
"""

from lmlab.embeddings.vectors import WordVectors

__all__ = ["WordVectors"]

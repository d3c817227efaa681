"""Stage ①: corpus preparation — read · normalize · filters · dedup · split · pipeline.

Entry points: `lmlab.corpus.pipeline.clean_corpus` (``lmlab corpus clean``) and
`corpus_stats` (``lmlab corpus stats``)."""

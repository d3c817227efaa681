"""⑧ Evaluation: classification (accuracy, P/R/F1, confusion matrix), extractive spans
(SQuAD v1.1 and CMRC2018 EM/F1), generated text (ROUGE, BLEU, chrF) and language models
(perplexity, bits per byte)."""

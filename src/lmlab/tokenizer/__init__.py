"""Stage ②: tokenizers — train (bpe | wordpiece | unigram | char) · tokenizer · stream · evaluate."""

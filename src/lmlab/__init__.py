"""lmlab: large language models from theory to practice.

The package follows the pipeline: ``corpus`` → ``tokenizer`` → ``embeddings`` → ``model`` →
``train`` → ``tasks`` → ``evaluation`` → ``generate`` / ``serve``, with ``hf`` for Hugging
Face interoperability. ``config`` and ``artifacts`` are the two layers every stage shares.
"""

__version__ = "0.1.0"

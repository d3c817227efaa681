"""lmlab: large language models from theory to practice.

The package follows the pipeline: ``corpus`` → ``tokenizer`` → ``embeddings`` → ``model`` →
``train`` → ``tasks`` → ``evaluation`` → ``generate`` / ``serve``, with ``hf`` for Hugging
Face interoperability. ``config`` and ``artifacts`` are the two layers every stage shares.
"""

__version__ = "0.1.0"


def pipeline(task: str, model_dir, overrides=()):
    """A fine-tuned task model, ready to call: ``lmlab.pipeline("sentiment", DIR)(texts)``."""
    from lmlab.tasks.pipeline import pipeline as _pipeline

    return _pipeline(task, model_dir, overrides)

"""⑦ Applications: sentiment analysis, extractive QA, summarisation, translation.

Each task is one module (reader + head + objective + metric; qa is a package) with its default
config in recipes/<name>-{pretrained,scratch}.yaml; `finetune` trains any of them with the one
training loop; `lmlab.pipeline(TASK, MODEL_DIR)` uses the result.
"""

from __future__ import annotations

import importlib

from lmlab.errors import ConfigError

TASKS = {"sentiment": "lmlab.tasks.sentiment", "qa": "lmlab.tasks.qa",
         "summarization": "lmlab.tasks.summarization", "translation": "lmlab.tasks.translation"}
ALIASES = {"classification": "sentiment", "summarisation": "summarization"}


def get_task(name: str):
    name = ALIASES.get(name, name)
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name]).TASK

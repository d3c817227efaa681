"""The tasks' default configs are YAML files shipped with the package (src/lmlab/tasks/recipes/):
every file belongs to a task, and every task's two files resolve to a valid config."""

from lmlab.tasks import TASKS, get_task
from lmlab.tasks.finetune import load_finetune_config
from lmlab.tasks.task import RECIPES


def test_every_recipe_file_is_a_task_s_and_resolves():
    used = set()
    for name in TASKS:
        task = get_task(name)
        assert task.recipe_name, name
        for pretrained in (True, False):
            used.add(f"{task.recipe_name}-{'pretrained' if pretrained else 'scratch'}.yaml")
            cfg = load_finetune_config(task, pretrained, None, [])  # unknown keys or bad values raise
            assert cfg.train.select_metric == "val_" + task.select_metric
        # an --init model starts from a lower learning rate than a model trained from scratch
        lr = [load_finetune_config(task, pretrained, None, []).optim.lr for pretrained in (True, False)]
        assert lr[0] < lr[1]
    assert {p.name for p in RECIPES.glob("*.yaml")} == used


def test_the_command_line_overrides_a_recipe():
    task = get_task("qa")
    assert task.recipe(True)["task"]["max_length"] == 256
    cfg = load_finetune_config(task, True, None, ["--task.max_length=64", "--train.max_steps=5"])
    assert cfg.task.max_length == 64 and cfg.task.epochs == 0.0  # max_steps set later than the recipe's epochs

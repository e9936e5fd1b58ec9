"""Tasks: data sets read into plain `Example`s, with their label lists and official metrics.

    from ptjax.tasks import get_task
    spec = get_task("conll03")
    train = spec.load(data_dir, "train")

Importing this package registers every built-in task (LAMA, SuperGLUE, GLUE/SST, tagging, SRL, QA,
PPT pre-training formats, RACE, Yahoo Answers, few-shot samples).
"""

from ptjax.tasks.base import (KINDS, Example, TaskSpec, collect_labels, get_task, load_examples,
                              register, task_names)
from ptjax.tasks import glue, lama, pretraining, qa, srl, sst, superglue, tagging  # noqa: F401  (registration)
from ptjax.tasks import race, yahoo  # noqa: F401  (registration)
from ptjax.tasks import fewshot  # noqa: F401  (after the tasks it samples)

__all__ = ["KINDS", "Example", "TaskSpec", "collect_labels", "get_task", "load_examples", "register",
           "task_names"]

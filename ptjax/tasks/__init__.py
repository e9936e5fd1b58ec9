"""Tasks: data sets read into plain `Example`s, with their label lists and official metrics.

    from ptjax.tasks import get_task
    spec = get_task("conll03")
    train = spec.load(data_dir, "train")

Importing this package registers every built-in task (LAMA, SuperGLUE, GLUE/SST, tagging, SRL, QA,
PPT pre-training formats, RACE, Yahoo Answers, few-shot samples) and the generic
text_classification / token_tagging a config defines (ptjax.tasks.custom). A task's rows may come
from a Hugging Face dataset or data files instead of its own files: ptjax.tasks.sources.
"""

# Registration does not depend on this order (a module imports the tasks it builds on).
from ptjax.tasks import (custom, fewshot, glue, lama, pretraining, qa, race, srl, sst, superglue,  # noqa: F401
                         tagging, yahoo)
from ptjax.tasks.base import (KINDS, Example, TaskSpec, collect_labels, get_task, load_examples,
                              register, task_names)

__all__ = ["KINDS", "Example", "TaskSpec", "collect_labels", "get_task", "load_examples", "register",
           "task_names"]

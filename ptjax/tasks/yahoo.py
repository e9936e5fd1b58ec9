"""Yahoo! Answers topic classification (Zhang et al. 2015): 10 topics, PPT's single-text task
with more than five labels.

Files under data_dir/yahoo_answers (or yahoo_answers_csv, or data_dir itself): train.csv and
test.csv, no header, four columns `"class","question title","question content","best answer"`,
class 1-10; text holds literal "\\n" sequences for line breaks (turned into spaces). The original
test set serves as the evaluation split ("validation" / "dev" mean "test").
"""

from __future__ import annotations

from typing import Any

from ptjax.data.readers import find_file, read_table
from ptjax.errors import at
from ptjax.tasks.base import Example, TaskSpec, check_label, register, task_dir

TOPICS = ("Society & Culture", "Science & Mathematics", "Health", "Education & Reference", "Computers & Internet",
          "Sports", "Business & Finance", "Entertainment & Music", "Family & Relationships", "Politics & Government")
LABELS = tuple(str(k) for k in range(1, len(TOPICS) + 1))
SPLITS = ("train", "test")


def _clean(text: str) -> str:
    return " ".join(text.replace("\\n", " ").split())


def load_yahoo(data_dir: Any, split: str) -> list[Example]:
    folder = task_dir(data_dir, ["yahoo_answers", "yahoo_answers_csv"], marker="train.csv")
    path = find_file(folder, [f"{split}.csv"], f"yahoo_answers split {split!r}")
    out = []
    for number, cells in read_table(path, header=False, num_columns=4):
        where = at(path, number)
        fields = {"title": _clean(cells[1]), "content": _clean(cells[2]), "answer": _clean(cells[3])}
        out.append(Example(f"yahoo_answers-{split}-{len(out)}", fields, check_label(cells[0], LABELS, where),
                           {"where": where}))
    return out


register(TaskSpec("yahoo_answers", "classification", LABELS, ("accuracy",), load_yahoo, SPLITS,
                  ("title", "content", "answer"), description="Yahoo! Answers, 10 topics",
                  split_aliases={"validation": "test", "dev": "test", "valid": "test"}))

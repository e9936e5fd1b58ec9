"""Generation from prompt exports: texts rendered with each export's template, several exports in
one batch, the command (`python -m ptjax.generate`, `ptjax generate`) and `load_prompt(...).generate`."""

from __future__ import annotations

import json

import jax
import pytest
from test_generation import save_diverse

from configs import base
from ptjax.experiment import build
from ptjax import generate as command
from ptjax.generation.text import TextGenerator
from ptjax.training import checkpoints as ckpt
from ptjax.training.engine import Engine
from ptjax.training.export_config import recordable

TEXTS = ["The film was great", "The food was terrible and the service was bad", "It rained"]


def export_config(model_dir, data_dir, method: str):
    config = base.get_config()
    config.model.name = str(model_dir)
    config.task.name = "text_classification"
    config.task.source = str(data_dir / "{split}.jsonl")
    config.task.labels = ("negative", "positive")
    config.task.eval_splits = ("dev",)
    config.task.length_buckets = (32,)
    config.method.name = method
    config.head.verbalizer = ("is", "was")  # single tokens of the tiny vocabulary
    if method == "lester":
        config.prompt.template = "[P*4] {text} . It was [MASK]"
    else:
        config.prompt.template = "{text} . It was [MASK]"
        config.prompt.deep.length = 3
        config.head.type = "verbalizer"
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two Lester exports and a P-tuning v2 export (random prompts) on a tiny GPT-2:
    ({name: export folder}, {name: its config}, the backbone)."""
    root = tmp_path_factory.mktemp("generation_exports")
    model_dir = save_diverse("gpt2", root)
    data = root / "data"
    data.mkdir()
    for split in ("train", "dev"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": t, "label": "positive"}) + "\n"
                                                     for t in TEXTS))
    paths, configs, backbone = {}, {}, None
    for seed, (name, method) in enumerate((("first", "lester"), ("second", "lester"), ("deep", "ptuning_v2"))):
        config = export_config(model_dir, data, method)
        experiment = build(config, backbone=backbone) if backbone is not None else build(config)
        backbone = experiment.backbone
        model, configs[name] = experiment.model, config
        trainable, _ = Engine(config, model).init_params(jax.random.PRNGKey(seed + 1))
        paths[name] = ckpt.write_export(root / name / "export", trainable, metadata=model.export_metadata(),
                                        fingerprint=backbone.fingerprint, backbone=config.model.name,
                                        config=recordable(config))
    return {name: root / name / "export" for name in paths}, configs, backbone


@pytest.fixture(scope="module")
def exports(exported):
    return exported[0]


def test_mixed_exports_generate_what_each_export_generates_alone(exports):
    both = TextGenerator.from_exports({"first": exports["first"], "second": exports["second"]}, batch_size=4)
    prompts = ["first", "second", "second"]
    mixed = both.generate(TEXTS, prompts, max_new_tokens=6)
    alone = [TextGenerator.from_exports({p: exports[p]}, batch_size=4).generate([t], max_new_tokens=6)[0]
             for t, p in zip(TEXTS, prompts)]
    assert [(r["tokens"], r["text"], r["prompt"]) for r in mixed] == [(r["tokens"], r["text"], r["prompt"])
                                                                         for r in alone]
    assert all(r["tokens"] for r in mixed)
    # The soft prompt matters: the other export continues the same text differently.
    swapped = both.generate(TEXTS, ["second", "first", "first"], max_new_tokens=6)
    assert [r["tokens"] for r in swapped] != [r["tokens"] for r in mixed]


def test_command_writes_jsonl_and_rejects_bad_lines(exports, tmp_path, capsys):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": TEXTS[0]}) + "\n" + json.dumps({"text": TEXTS[1], "prompt": "deep"}) + "\n")
    out = tmp_path / "out.jsonl"
    deep = TextGenerator.from_exports({"deep": exports["deep"]}).generate([TEXTS[1]], max_new_tokens=5)[0]
    # Two prompt kinds cannot share a bank: one export per kind here.
    assert command.main(["--restore", f"deep={exports['deep']}", "--input", str(inputs), "--output", str(out),
                         "--max-new-tokens", "5", "--strategy", "beam", "--num-beams", "2"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and {line["prompt"] for line in lines} == {"deep"} and "score" in lines[0]
    greedy_out = tmp_path / "greedy.jsonl"
    command.main(["--restore", f"deep={exports['deep']}", "--input", str(inputs), "--output", str(greedy_out),
                  "--max-new-tokens", "5", "--devices", "2"])  # the batch's rows split over 2 of conftest's devices
    assert json.loads(greedy_out.read_text().splitlines()[1])["tokens"] == deep["tokens"]

    inputs.write_text(json.dumps({"text": "fine"}) + "\n{not json\n")
    with pytest.raises(SystemExit) as exit_info:
        command.main(["--restore", str(exports["first"]), "--input", str(inputs)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {inputs}:2: not JSON")


def test_load_prompt_generate(exports):
    import ptjax

    prompt = ptjax.load_prompt(exports["first"])
    ours = prompt.generate(TEXTS[:2], max_new_tokens=6)
    reference = TextGenerator.from_exports({"first": exports["first"]}).generate(TEXTS[:2], max_new_tokens=6)
    assert [r["text"] for r in ours] == [r["text"] for r in reference]
    split = prompt.generate(TEXTS[:3], max_new_tokens=6, devices=2)  # rows over 2 of conftest's CPU devices
    assert prompt._generator[1].generator.mesh.size == 2
    assert [r["text"] for r in split] == [r["text"] for r in prompt.generate(TEXTS[:3], max_new_tokens=6)]


def test_serve_generates_for_every_served_task(exported):
    from ptjax import serve

    paths, configs, backbone = exported
    tasks = serve.load_tasks(configs["first"], [(configs[n], paths[n]) for n in ("first", "second")],
                             backbone=backbone)
    # Both exports train the task text_classification: the served names are the task's, so rename.
    tasks[1].name = "text_classification_2"
    served = serve.text_generator(tasks, batch_size=4).generate(TEXTS, [t.name for t in (tasks[0], tasks[1], tasks[1])],
                                                                 max_new_tokens=6)
    direct = TextGenerator.from_exports({"first": paths["first"], "second": paths["second"]}, batch_size=4).generate(
        TEXTS, ["first", "second", "second"], max_new_tokens=6)
    assert [r["tokens"] for r in served] == [r["tokens"] for r in direct]
    split = serve.text_generator(tasks, batch_size=4, devices=2)  # rows over 2 of conftest's CPU devices
    assert split.generator.mesh.size == 2
    assert [r["tokens"] for r in split.generate(TEXTS, [t.name for t in (tasks[0], tasks[1], tasks[1])],
                                                 max_new_tokens=6)] == [r["tokens"] for r in served]

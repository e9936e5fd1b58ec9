"""The comparison runner (mode "sweep"): variants x grid x seeds in their own run directories,
tables with mean ± std over seeds, per-group tables, reruns that skip finished runs and resume
the others."""

import csv
import json

import jax
import numpy as np
import pytest
from test_lama import ONE_DEVICE, lama_config, write_lama

from ptjax.errors import InputError
from ptjax.eval.summary import mean_std
from ptjax.sweep import parse_grid, parse_variant, plan_runs, run_config, run_sweep, set_key

VARIANTS = ("manual: mode=eval; method.name=manual",
            "ptuning: method.name=ptuning; prompt.encoder=none; optimizer.learning_rate=0.1")


def sweep_config(model_dir, data_dir, variants=VARIANTS, seeds=(0, 1)):
    config = lama_config(model_dir, data_dir, **{"train.num_steps": 3, "train.eval_every": 3})
    config.mode = "sweep"
    config.sweep.variants = variants
    config.sweep.seeds = seeds
    return config


def test_parsing_and_run_layout(tmp_path):
    assert parse_variant("pt: method.name=ptuning; prompt.template=[P*3] {sub} [MASK]; train.num_steps=5", "v") == (
        "pt", (("method.name", "ptuning"), ("prompt.template", "[P*3] {sub} [MASK]"), ("train.num_steps", 5)))
    assert parse_variant("base", "v") == ("base", ())
    with pytest.raises(InputError, match="folder name"):
        parse_variant("a/b: x=1", "v")
    with pytest.raises(InputError, match="key=value"):
        parse_variant("a: method.name", "v")
    assert parse_grid("optimizer.learning_rate=(1e-3, 3e-3)", "g") == ("optimizer.learning_rate", (1e-3, 3e-3))
    with pytest.raises(InputError, match="key=\\(value"):
        parse_grid("optimizer.learning_rate=1e-3", "g")

    config = sweep_config("m", tmp_path, seeds=(3, 4))
    config.sweep.grid = ("optimizer.learning_rate=(1e-3, 3e-3)", "prompt.length=(2,)")
    runs = plan_runs(config, tmp_path)
    assert [str(r.path.relative_to(tmp_path)) for r in runs[:3]] == [
        "manual/optimizer.learning_rate=0.001,prompt.length=2/seed_3",
        "manual/optimizer.learning_rate=0.001,prompt.length=2/seed_4",
        "manual/optimizer.learning_rate=0.003,prompt.length=2/seed_3"]
    assert len(runs) == 2 * 2 * 1 * 2
    derived = run_config(config, runs[-1])
    assert (derived.mode, derived.method.name, derived.seed) == ("train", "ptuning", 4)
    # Variant overrides first, then the grid point's (which wins over the variant's 0.1), then the seed.
    assert derived.optimizer.learning_rate == 0.003 and derived.prompt.length == 2 and derived.prompt.encoder == "none"
    assert config.method.name == "ptuning" and config.mode == "sweep"  # the base config is untouched

    set_key(derived, "optimizer.learning_rate", 1, "t")  # int -> float
    assert derived.optimizer.learning_rate == 1.0 and isinstance(derived.optimizer.learning_rate, float)
    set_key(derived, "task.eval_splits", "dev", "t")  # one name -> a tuple
    assert derived.task.eval_splits == ("dev",)
    set_key(derived, "task.options.common_vocab", "29k", "t")  # free-form options take new keys
    assert derived.task.options.common_vocab == "29k"
    with pytest.raises(InputError, match="no key 'train.epochs'"):
        set_key(derived, "train.epochs", 3, "t")
    with pytest.raises(InputError, match="True or False"):
        set_key(derived, "method.train_backbone", 1, "t")


def test_mean_and_sample_std():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.2, 0.4, 0.9])
    assert mean == pytest.approx(0.5) and std == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_variants_two_seeds_tables_and_rerun(tmp_path, tiny_model_dir, capsys):
    data_dir = write_lama(tmp_path / "lama")
    workdir = tmp_path / "sweep"
    config = sweep_config(tiny_model_dir("gpt2"), data_dir)
    run_sweep(config, workdir, devices=ONE_DEVICE)

    results = {(v, s): json.loads((workdir / v / f"seed_{s}" / "results.json").read_text())
               for v in ("manual", "ptuning") for s in (0, 1)}
    assert {r["status"] for r in results.values()} == {"completed"}
    assert results["ptuning", 1]["config"]["seed"] == 1 and results["ptuning", 1]["steps"] == 3
    assert results["manual", 0]["mode"] == "eval"

    summary = {row["variant"]: row for row in read_csv(workdir / "results.csv")}
    assert set(summary) == {"manual", "ptuning"} and summary["ptuning"]["seeds"] == "2"
    seeds = [results["ptuning", s]["metrics"]["validation"]["p_at_1"] for s in (0, 1)]
    assert float(summary["ptuning"]["p_at_1_mean"]) == pytest.approx(np.mean(seeds))
    assert float(summary["ptuning"]["p_at_1_std"]) == pytest.approx(np.std(seeds, ddof=1))
    per_relation = {row["group"]: row for row in read_csv(workdir / "results_p_at_1.csv")}
    assert list(per_relation) == ["P17", "P36", "all"]
    assert float(per_relation["P36"]["manual_mean"]) == results["manual", 0]["metrics"]["validation"]["p_at_1/P36"]
    markdown = (workdir / "results.md").read_text()
    assert "| manual | 2/2 |" in markdown and "## p_at_1 per group (%)" in markdown
    assert "| P36 |" in markdown and "**all (p_at_1)**" in markdown
    assert markdown in capsys.readouterr().out

    # A rerun skips every finished run; a run without results.json resumes from its checkpoint.
    # (The variants listed in another order, with another progress setting: the same runs.)
    stamps = {key: (workdir / key[0] / f"seed_{key[1]}" / "results.json").stat().st_mtime_ns for key in results}
    (workdir / "ptuning" / "seed_1" / "results.json").unlink()
    # Folders recorded by an older ptjax (before model.attention_impl existed) on another device
    # count, checkpointing at another interval: none changes a run's results, so the runs are kept.
    for record_path in workdir.glob("*/seed_*/sweep_run.json"):
        record = json.loads(record_path.read_text())
        assert record["config"]["model"].pop("attention_impl") == "auto"
        record["config"]["mesh"]["cpu_devices"] = 7
        record["config"]["checkpoint"]["every_steps"] = 1000
        record_path.write_text(json.dumps(record))
    config = sweep_config(tiny_model_dir("gpt2"), data_dir, variants=VARIANTS[::-1])
    config.logging.progress = True
    run_sweep(config, workdir, devices=ONE_DEVICE)
    captured = capsys.readouterr()
    assert captured.out.count("finished earlier, skipped") == 3 and "resuming from step 3" in captured.err
    for key, stamp in stamps.items():
        path = workdir / key[0] / f"seed_{key[1]}" / "results.json"
        assert (path.stat().st_mtime_ns == stamp) == (key != ("ptuning", 1))
    resumed = json.loads((workdir / "ptuning" / "seed_1" / "results.json").read_text())
    assert resumed["metrics"] == results["ptuning", 1]["metrics"]

    # A variant whose overrides changed is refused rather than mixed with the old runs.
    changed = sweep_config(tiny_model_dir("gpt2"), data_dir,
                           variants=(VARIANTS[0], VARIANTS[1].replace("0.1", "0.2")))
    with pytest.raises(InputError, match=r"different config .*\(optimizer.learning_rate 0.1 -> 0.2\)"):
        run_sweep(changed, workdir, devices=ONE_DEVICE)
    assert jax.devices()  # the runs left the process usable


def test_plot_draws_lines_over_a_numeric_grid_key_and_bars_otherwise(tmp_path):
    import matplotlib.image

    from ptjax import sweep_plot
    from ptjax.eval.summary import Row, write_tables

    lengths = [Row(variant, (("prompt.deep.length", n),), {"val/score": [0.5 + n / 100, 0.6], "val/accuracy": [0.5]},
                   2, ["completed"] * 2)
               for variant in ("embedding", "mlp") for n in (1, 4, 16)]
    write_tables(tmp_path / "length", lengths)
    grid_keys, metrics, rows = sweep_plot.read_results(tmp_path / "length" / "results.csv")
    assert grid_keys == ["prompt.deep.length"] and sweep_plot.default_metrics(metrics) == ["val/score"]
    assert len(rows) == 6
    figure = sweep_plot.plot(tmp_path / "length")
    assert figure == tmp_path / "length" / "results.png"
    assert matplotlib.image.imread(figure).shape[1] > 300  # one panel: val/score

    depths = [Row(name, (), {"val/score": [0.7]}, 1, ["completed"]) for name in ("bottom_2", "top_2", "all_6")]
    write_tables(tmp_path / "depth", depths)
    assert sweep_plot.plot(tmp_path / "depth", out=tmp_path / "depth.png").is_file()

    with pytest.raises(InputError, match="no metric"):
        sweep_plot.plot(tmp_path / "depth", metrics=["val/f1"])
    with pytest.raises(InputError, match="not a grid key"):
        sweep_plot.plot(tmp_path / "depth", x_key="prompt.length")
    with pytest.raises(InputError, match="no such file"):
        sweep_plot.plot(tmp_path / "missing")


def test_over_variants_reports_mean_std_best_and_the_dev32_pick(tmp_path):
    """PET's multi-pattern report: each variant's mean over seeds, then mean ± std over variants,
    the best variant on val and the one dev32 would pick (Table 6: not the same one)."""
    from ptjax.eval.summary import Row, write_tables

    rows = [Row("p0", (), {"dev32/accuracy": [0.5, 0.6], "val/accuracy": [0.6, 0.6]}, 2, ["completed"] * 2),
            Row("p1", (), {"dev32/accuracy": [0.7, 0.7], "val/accuracy": [0.5, 0.55]}, 2, ["completed"] * 2),
            Row("p2", (), {"dev32/accuracy": [0.4, 0.4], "val/accuracy": [0.7, 0.7]}, 2, ["completed"] * 2)]
    markdown = write_tables(tmp_path, rows, over_variants=True)
    line = next(line for line in markdown.splitlines() if line.startswith("| val/accuracy"))
    means = [0.6, 0.525, 0.7]
    expected = f"{np.mean(means) * 100:.1f} ± {np.std(means, ddof=1) * 100:.1f}"
    assert line == f"| val/accuracy % | {expected} | p2: 70.0 | p1: 52.5 |"
    assert "Over variants" not in write_tables(tmp_path, rows)

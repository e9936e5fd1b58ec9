"""ptjax.benchmarks.train_step: throughput, FLOPs and memory of the train step, as one JSON line."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest
import toy_experiment

from ptjax.benchmarks import train_step as bench

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_reports_throughput_flops_and_memory(tiny_model_dir, tmp_path):
    config = toy_experiment.toy_config(tiny_model_dir("bert"), tmp_path)
    model, data = toy_experiment.build(config)
    unrolled_config = config.copy_and_resolve_references()
    unrolled_config.model.scan_layers = False
    unrolled, _ = toy_experiment.build(unrolled_config)
    result = bench.benchmark(config, model, data, warmup=1, steps=2, unrolled_model=unrolled)
    json.dumps(result)  # one JSON line
    assert result["examples_per_s"] > 0 and result["tokens_per_s"] > 0
    assert result["padded_tokens_per_s"] >= result["tokens_per_s"]
    assert result["flops_source"] == result["achieved_flops_source"] == "cost_analysis_unrolled"
    # XLA counts the scanned layer body once: the unrolled count holds both layers.
    engine, trainable, frozen, opt_state, step, batches = toy_experiment.prepared(config, model, data)
    with engine.activate():
        scanned = bench.cost_flops(step.jitted.lower(trainable, frozen, opt_state, batches[0],
                                                      jax.random.PRNGKey(0)))
    assert 1.3 * scanned < result["flops_per_step"] < 2.5 * scanned
    assert result["flops_per_step_estimate"] > 0 and result["peak_memory_bytes"] > 0
    assert result["timed_steps"] == 2 and result["devices"] == 8
    assert set(result["lengths"]) == {"length"}


def test_bench_cli_reports_bad_input_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "ptjax.benchmarks.train_step", "--config", "configs/base.py",
                           "--config.optimizer.name=lion"], cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: config.optimizer.name='lion': choose one of 'adamw', 'adam', 'adafactor', 'sgd'"]

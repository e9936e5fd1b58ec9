"""The PEFT comparison, scaling and MFU benchmark commands run end to end on tiny models and
print their JSON fields (no timed assertions: timings on a shared CI machine mean nothing)."""

from __future__ import annotations

import json
import os

import pytest

from ptjax.benchmarks import generation as bench_generation, mfu as bench_mfu, peft as bench_peft, scaling as bench_scaling


@pytest.fixture(autouse=True)
def _keep_the_test_process_allocator(monkeypatch):
    """The commands tune glibc's malloc for long CPU runs (ptjax/hostmem.py); not this process."""
    monkeypatch.setenv("PTJAX_KEEP_FREED_MEMORY", "0")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("family,case,dtype", [("bert", "minilm_ptuning_v2", "float32"),
                                               ("llama", "smollm2_lester", "float32"),
                                               ("bert", "minilm_lester", "bfloat16")])
def test_bench_peft_reports_both_sides(tiny_model_dir, capsys, family, case, dtype):
    assert bench_peft.main(["--cases", case, "--model", str(tiny_model_dir(family)), "--batch", "8",
                            "--length", "12", "--rounds", "2", "--steps", "1", "--warmup", "1",
                            "--peak-size", "128", "--dtype", dtype]) == 0
    result, peak = json_lines(capsys.readouterr().out)
    assert result["case"] == case and result["batch"] == 8 and len(result["ptjax_rounds"]) == 2
    # Both sides train exactly the same parameters (prompt, plus the linear head for MiniLM cases).
    assert result["trainable_params"]["ptjax"] == result["trainable_params"]["peft"] > 0
    for key in ("ptjax_examples_per_s", "peft_examples_per_s", "speedup_median_of_rounds", "flops_per_step",
                "ptjax_mfu", "peft_mfu", "ptjax_mfu_cpu_time", "peft_cpu_s_per_step"):
        assert result[key] > 0, key
    assert peak["matmul_peak"]["peak_flops_per_s"] > 0
    assert peak["mfu_vs_run_peak"][case] == pytest.approx(result["ptjax_mfu"])  # one case: the same peak
    assert result["dtype"] == dtype
    if dtype == "bfloat16":  # MFU against both peaks
        assert result["matmul_peak_float32"]["peak_flops_per_s"] > 0
        assert result["ptjax_mfu_vs_float32_peak"] > 0 and result["peft_mfu_vs_float32_peak"] > 0


@pytest.mark.slow
def test_bench_peft_runs_ptjax_over_several_cpu_devices(tiny_model_dir, capsys):
    assert bench_peft.main(["--cases", "minilm_lester", "--model", str(tiny_model_dir("bert")), "--batch", "4",
                            "--length", "8", "--rounds", "1", "--steps", "1", "--warmup", "1", "--peak-size", "0",
                            "--host-devices", "2"]) == 0
    result, _ = json_lines(capsys.readouterr().out)
    assert result["ptjax_devices"] == 2 and result["ptjax_examples_per_s"] > 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generation_benchmark_reports_ptjax_against_peft(tiny_model_dir, capsys, dtype):
    """Float32: the sides generate the same tokens. bfloat16: both PEFT settings are timed, the
    faster is the reference."""
    assert bench_generation.main(["--cases", "peft", "--model", str(tiny_model_dir("llama")), "--batch", "2",
                                  "--text-tokens", "4", "--prompt-tokens", "3", "--new-tokens", "3",
                                  "--rounds", "1", "--settle", "0", "--dtype", dtype]) == 0
    (result,) = json_lines(capsys.readouterr().out)
    assert result["ptjax_tokens_per_s"] > 0 and result["speedup"] > 0 and result["dtype"] == dtype
    if dtype == "float32":
        assert result["reference"] == "peft" and result["identical_rows"] == "2/2"
    else:
        assert set(result["identical_rows"]) == {"peft_autocast", "peft_bf16_weights"}
        assert result["reference"] in result["identical_rows"]
        assert result[f"{result['reference']}_tokens_per_s"] >= min(
            result["peft_autocast_tokens_per_s"], result["peft_bf16_weights_tokens_per_s"])


def test_bench_peft_refuses_unknown_cases(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_peft.main(["--cases", "nonsense", "--peak-size", "0"])
    assert exit_info.value.code == 2
    assert "unknown ['nonsense']" in capsys.readouterr().err


@pytest.mark.slow
def test_scaling_plot_and_mfu_commands(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "step_time"
    assert bench_scaling.main(["--model", str(tiny_model_dir("bert")), "--batch", "8", "--steps", "1",
                               "--prompt-lengths", "4", "--text-lengths", "8", "--fixed-text", "8",
                               "--fixed-prompt", "2", "--methods", "ptuning_v2", "--out", str(out)]) == 0
    points = json_lines(capsys.readouterr().out)
    assert [(p["sweep"], p["prompt_length"], p["text_length"]) for p in points] == [("prompt", 4, 8), ("text", 2, 8)]
    assert all(p["step_s"] > 0 and p["flops_per_step"] > 0 for p in points)
    assert out.with_suffix(".png").stat().st_size > 0
    assert len(json.loads(out.with_suffix(".json").read_text())["points"]) == 2

    assert bench_mfu.main(["--preset", "tiny", "--batch", "8", "--length", "8", "--steps", "1",
                           "--peak-size", "64", "--dtype", "float32", "--attention", "xla"]) == 0
    (mfu,) = json_lines(capsys.readouterr().out)
    assert mfu["attention"] == "xla"  # the kernel the model ran with
    assert mfu["compilation_cache"] == os.environ["JAX_COMPILATION_CACHE_DIR"]  # "auto" keeps JAX's folder
    assert mfu["params"] > 0 and mfu["flops_per_step"] > 0 and 0 < mfu["mfu_vs_measured_matmul"]


def test_keep_freed_memory_applies_once_or_is_switched_off(monkeypatch):
    from ptjax import hostmem

    assert hostmem.keep_freed_memory() is False  # switched off by the fixture
    monkeypatch.setattr(hostmem, "_done", True)
    assert hostmem.keep_freed_memory() is True   # already applied: nothing to do


def test_hash_dropout_masks_keep_the_rate_and_look_independent():
    import jax
    import numpy as np

    from ptjax.models.layers import Dropout, dropout_mask

    key = jax.random.PRNGKey(3)
    mask = np.asarray(dropout_mask(key, (64, 1000), 0.9))
    assert abs(mask.mean() - 0.9) < 0.006
    other = np.asarray(dropout_mask(jax.random.fold_in(key, 1), (64, 1000), 0.9))
    assert abs((mask == other).mean() - (0.9**2 + 0.1**2)) < 0.01  # another key: an independent mask
    flat = mask.reshape(-1).astype(float)
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.02      # neighbours uncorrelated
    assert abs(np.corrcoef(mask[:-1].reshape(-1), mask[1:].reshape(-1))[0, 1]) < 0.02
    # More than 2^32 elements: the leading axes are mixed in (traced only, never materialized).
    assert jax.eval_shape(lambda k: dropout_mask(k, (2**12, 2**12, 2**10), 0.5), key).shape == (2**12, 2**12, 2**10)
    x = np.ones((8, 100), np.float32)
    out = np.asarray(Dropout(0.25).apply({}, x, deterministic=False, rngs={"dropout": key}))
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)} and abs((out > 0).mean() - 0.75) < 0.06
    np.testing.assert_array_equal(Dropout(0.25).apply({}, x, deterministic=True), x)


@pytest.mark.slow
def test_attention_benchmark_reports_both_libraries(tiny_model_dir, capsys):
    from ptjax.benchmarks import attention as bench_attention

    assert bench_attention.main(["--model", str(tiny_model_dir("bert")), "--batch", "2", "--length", "8",
                                 "--repeats", "1"]) == 0
    (result,) = json_lines(capsys.readouterr().out)
    for side in ("jax", "torch"):
        for name in ("attention_fwd_bwd", "scores", "dense"):
            assert result[f"{side}_{name}_ms"] > 0 and result[f"{side}_{name}_gflops_per_s"] > 0
    assert result["jax_nn_attention_fwd_bwd_ms"] > 0 and result["attention_dropout"] == 0.1

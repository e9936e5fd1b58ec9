"""The PEFT comparison, scaling and MFU benchmark commands run end to end on tiny models and
print their JSON fields (no timed assertions: timings on a shared CI machine mean nothing)."""

from __future__ import annotations

import json

import pytest

from ptjax import bench_mfu, bench_peft, bench_scaling


@pytest.fixture(autouse=True)
def _keep_the_test_process_allocator(monkeypatch):
    """The commands tune glibc's malloc for long CPU runs (ptjax/hostmem.py); not this process."""
    monkeypatch.setenv("PTJAX_KEEP_FREED_MEMORY", "0")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("family,case", [("bert", "minilm_ptuning_v2"), ("llama", "smollm2_lester")])
def test_bench_peft_reports_both_sides(tiny_model_dir, capsys, family, case):
    assert bench_peft.main(["--cases", case, "--model", str(tiny_model_dir(family)), "--batch", "8",
                            "--length", "12", "--rounds", "2", "--steps", "1", "--warmup", "1",
                            "--peak-size", "128"]) == 0
    result, peak = json_lines(capsys.readouterr().out)
    assert result["case"] == case and result["batch"] == 8 and len(result["ptjax_rounds"]) == 2
    # Both sides train exactly the same parameters (prompt, plus the linear head for MiniLM cases).
    assert result["trainable_params"]["ptjax"] == result["trainable_params"]["peft"] > 0
    for key in ("ptjax_examples_per_s", "peft_examples_per_s", "speedup_median_of_rounds", "flops_per_step",
                "ptjax_mfu", "peft_mfu"):
        assert result[key] > 0, key
    assert peak["matmul_peak"]["peak_flops_per_s"] > 0


def test_bench_peft_refuses_unknown_cases(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_peft.main(["--cases", "nonsense", "--peak-size", "0"])
    assert exit_info.value.code == 2
    assert "unknown ['nonsense']" in capsys.readouterr().err


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
                           "--peak-size", "64", "--dtype", "float32"]) == 0
    (mfu,) = json_lines(capsys.readouterr().out)
    assert mfu["params"] > 0 and mfu["flops_per_step"] > 0 and 0 < mfu["mfu_vs_measured_matmul"]


def test_keep_freed_memory_applies_once_or_is_switched_off(monkeypatch):
    from ptjax import hostmem

    assert hostmem.keep_freed_memory() is False  # switched off by the fixture
    monkeypatch.setattr(hostmem, "_done", True)
    assert hostmem.keep_freed_memory() is True   # already applied: nothing to do

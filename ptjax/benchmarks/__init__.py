"""Benchmark commands, each run as `python -m ptjax.benchmarks.NAME` (figures in BENCHMARKS.md):

    train_step  throughput and FLOPs of the train step of any experiment config
    peft        ptjax vs PEFT (torch) on the same train step and shapes, with MFU
    sides       the two sides `peft` times (not a command)
    scaling     step time vs prompt and text length (plot)
    attention   attention kernels (ptjax, jax.nn, torch) vs dense matmuls
    mfu         MFU of a 1B prompt-tuning step on GPU/TPU
    sweep       a sweep one run after another vs sweep.batched (PPT seeds, MiniLM rate x seed grid)
"""

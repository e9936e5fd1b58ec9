"""Interleaved A/B of the PEFT benchmark's ptjax side (BENCHMARKS.md, "bf16 compute"): one
`python -m ptjax.benchmarks.peft --side ptjax` process per arm, each warmed up, then rounds of STEPS
steps taken in turn (the order reversed every other round, so drifts of the host hit both arms);
prints each arm's median and fastest seconds per step and every round.

    python benchmarks/scripts/ab_ptjax_side.py CASE ROUNDS STEPS DTYPE ARM [ARM ...]

An ARM is a checkout of the repository (e.g. `git worktree add /tmp/before COMMIT`), optionally
followed by @XLA_FLAGS for that arm's process: `/tmp/before@--xla_cpu_prefer_vector_width=512`.
AB_ARGS adds options of `python -m ptjax.benchmarks.peft` to every arm, e.g. `AB_ARGS="--batch 8
--length 32"` for a smaller step than the case's.
"""

import json
import os
import statistics
import subprocess
import sys

MARK = "@bench "  # ptjax.benchmarks.peft's protocol prefix


def reply(process) -> dict:
    for line in process.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"an arm's process ended (exit status {process.wait()}) before answering")


def main() -> None:
    case, rounds, steps, dtype, arms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
    processes = []
    for arm in arms:
        root, _, flags = arm.partition("@")
        env = {**os.environ, "PYTHONPATH": root}
        if flags:
            env["XLA_FLAGS"] = flags
        command = [sys.executable, "-m", "ptjax.benchmarks.peft", "--side", "ptjax", "--cases", case,
                   "--warmup", "3", "--steps", str(steps), "--peak-size", "0", "--dtype", dtype,
                   *os.environ.get("AB_ARGS", "").split()]
        processes.append(subprocess.Popen(command, cwd=root, env=env, text=True,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        reply(processes[-1])
    seconds = {arm: [] for arm in arms}
    for index in range(rounds):
        order = list(zip(arms, processes))
        for arm, process in order if index % 2 == 0 else order[::-1]:
            process.stdin.write(f"run {steps} 1\n")
            process.stdin.flush()
            seconds[arm].append(reply(process)["wall"] / steps)
    for process in processes:
        process.stdin.close()
        process.wait()
    for arm, times in seconds.items():
        print(f"{arm}: median {statistics.median(times):.3f} s/step, fastest {min(times):.3f}, "
              f"rounds {[round(t, 3) for t in times]}")


if __name__ == "__main__":
    main()

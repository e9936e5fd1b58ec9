"""Multi-process start-up: `initialize()` is what `main.py --distributed` and every script in
launch/ run before JAX touches a device.

Where a cluster announces itself JAX finds everything on its own (Cloud TPU VMs through the TPU
metadata server, SLURM, Open MPI, Kubernetes). Elsewhere, or to override the detection, three
environment variables describe the job, the same on every process except the id:

    JAX_COORDINATOR_ADDRESS=host:port   process 0's address (JAX reads this one itself too)
    JAX_NUM_PROCESSES=N                 how many processes
    JAX_PROCESS_ID=i                    this process, 0 <= i < N

With the count and id given, cluster detection is switched off, so each process keeps every
local device (JAX's SLURM detection would otherwise give each process only the GPU numbered by
its SLURM_LOCALID). On CPU-only runs (JAX_PLATFORMS=cpu) the collectives go over gloo.
"""

from __future__ import annotations

import os

import jax

from ptjax.errors import InputError

ADDRESS, COUNT, PROCESS = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def _int_variable(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r}: not an integer") from None


def distributed_arguments() -> dict:
    """jax.distributed.initialize's keyword arguments from the environment (see module doc)."""
    count, process = _int_variable(COUNT), _int_variable(PROCESS)
    if (count is None) != (process is None):
        raise InputError(f"set both {COUNT} and {PROCESS} (or neither, to let JAX detect the cluster)")
    if count is None:
        return {}
    address = os.environ.get(ADDRESS)
    if not address:
        raise InputError(f"{COUNT}={count} and {PROCESS}={process} need {ADDRESS}=host:port (process 0)")
    if not 0 <= process < count:
        raise InputError(f"{PROCESS}={process}: must be in [0, {COUNT}={count})")
    return {"coordinator_address": address, "num_processes": count, "process_id": process,
            "cluster_detection_method": "deactivate"}


def initialize() -> None:
    """jax.distributed.initialize from the environment; call before any other JAX use."""
    arguments = distributed_arguments()
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**arguments)

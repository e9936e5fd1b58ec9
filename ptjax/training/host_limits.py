"""What this process may use of its host: cores and free memory, container limits included.

A container (docker --cpus / --memory, a Kubernetes pod's limits, a systemd slice) limits a process
through its control group, not through what /proc/cpuinfo, the CPU affinity mask or /proc/meminfo
show: those show the whole host. A CPU device per host core inside a 2-CPU quota would
oversubscribe it, and weight copies sized to the host's free memory would be killed at the
container's limit. So both figures here are the host's, lowered to the tightest limit of the
process's control group and of every group above it (cgroup v2 and v1).

    physical_cores()             # cores of the affinity mask (hyperthreads of a core once), at most the CPU quota
    available_memory_bytes()     # MemAvailable, at most the group's limit minus its working set
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# Where cgroup v1 mounts each controller's hierarchy (the names join co-mounted controllers).
V1_FOLDERS = {"cpu": ("cpu", "cpu,cpuacct", "cpuacct,cpu"), "memory": ("memory",)}
UNLIMITED = 1 << 60  # v1 writes "no limit" as a page-rounded 2^63 - 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def group_folders(controller: str, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> list[Path]:
    """The folders of `controller` for this process's control group and every group above it, for
    the hierarchies it belongs to (v2's unified one, v1's controller one). Inside a container's
    cgroup namespace the group is the mount's root, which is included in any case."""
    text = _read(proc_cgroup) or ""
    folders = []
    for line in text.splitlines():
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2
            bases = [root]
        elif controller in controllers.split(","):
            bases = [root / name for name in V1_FOLDERS[controller]]
        else:
            continue
        parts = [p for p in group.strip("/").split("/") if p]
        for base in bases:
            if base.is_dir():
                folders += [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """Whole CPUs the groups' CFS quota allows (at least 1), None where no group sets one."""
    quotas = []
    for folder in group_folders("cpu", root, proc_cgroup):
        v2 = (_read(folder / "cpu.max") or "").split()
        if len(v2) == 2 and v2[0] != "max":
            quotas.append(int(v2[0]) / int(v2[1]))
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota and period and int(quota) > 0:
            quotas.append(int(quota) / int(period))
    return max(int(min(quotas)), 1) if quotas else None


def group_available_memory(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The least that any group's memory limit leaves: limit minus working set (usage less the
    inactive file cache, which the kernel reclaims first, as container runtimes count it); None
    where no group sets a limit."""
    left = []
    for folder in group_folders("memory", root, proc_cgroup):
        for limit_file, usage_file, inactive_key in (("memory.max", "memory.current", "inactive_file"),
                                                     ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                      "total_inactive_file")):
            limit, usage = _read(folder / limit_file), _read(folder / usage_file)
            if not limit or not limit.isdigit() or int(limit) >= UNLIMITED or not (usage or "").isdigit():
                continue
            inactive = 0
            for line in (_read(folder / "memory.stat") or "").splitlines():
                key, _, value = line.partition(" ")
                if key == inactive_key and value.isdigit():
                    inactive = int(value)
            left.append(max(int(limit) - (int(usage) - min(inactive, int(usage))), 0))
    return min(left) if left else None


def physical_cores() -> int:
    """Cores this process may run on, counting hyperthreads of one core once, at most its groups'
    CPU quota."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("", str(cpu)))
    quota = cpu_quota()
    return max(min(len(cores), quota or len(cores)), 1)


def available_memory_bytes() -> int | None:
    """The host's MemAvailable, at most what the groups' memory limits leave; None if unknown."""
    host = None
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemAvailable:"):
            host = int(line.split()[1]) * 1024
    limits = [value for value in (host, group_available_memory()) if value is not None]
    return min(limits) if limits else None

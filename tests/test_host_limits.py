"""Cores and memory a process may use, lowered to its control group's limits (cgroup v2 and v1),
read from fake /sys/fs/cgroup trees: a container's quota is what "auto" CPU devices count on."""

import os

from ptjax.training import host_limits

GIB = 1 << 30


def tree(tmp_path, proc_lines: str, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(proc_lines)
    return root, proc


def test_v2_quota_and_memory_of_the_group_and_its_parents(tmp_path):
    root, proc = tree(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "cgroup.controllers": "cpu memory",
        "kubepods/cpu.max": "max 100000",
        "kubepods/pod1/cpu.max": "250000 100000",  # 2.5 CPUs: two whole ones
        "kubepods/pod1/ctr/cpu.max": "max 100000",
        "kubepods/memory.max": str(64 * GIB), "kubepods/memory.current": str(10 * GIB),
        "kubepods/pod1/ctr/memory.max": str(8 * GIB), "kubepods/pod1/ctr/memory.current": str(5 * GIB),
        "kubepods/pod1/ctr/memory.stat": f"anon {2 * GIB}\ninactive_file {2 * GIB}\nactive_file 0\n",
    })
    assert host_limits.cpu_quota(root, proc) == 2
    # 8 GiB limit, 5 GiB used of which 2 GiB is reclaimable cache: 5 GiB left (the parent leaves 54).
    assert host_limits.group_available_memory(root, proc) == 5 * GIB


def test_v1_hierarchies_and_unlimited_groups(tmp_path):
    root, proc = tree(tmp_path, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n2:pids:/docker/abc\n", {
        "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
        "memory/memory.limit_in_bytes": "9223372036854771712", "memory/memory.usage_in_bytes": str(30 * GIB),
        "memory/docker/abc/memory.limit_in_bytes": str(4 * GIB),
        "memory/docker/abc/memory.usage_in_bytes": str(3 * GIB),
        "memory/docker/abc/memory.stat": f"cache {GIB}\ntotal_inactive_file {GIB}\n",
    })
    assert host_limits.cpu_quota(root, proc) == 1  # half a CPU still runs one device
    assert host_limits.group_available_memory(root, proc) == 2 * GIB

    root, proc = tree(tmp_path / "free", "1:cpu:/\n0::/\n", {
        "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000", "cpu.max": "max 100000"})
    assert host_limits.cpu_quota(root, proc) is None
    assert host_limits.group_available_memory(root, proc) is None
    assert host_limits.group_folders("memory", tmp_path / "missing", tmp_path / "missing") == []


def test_this_host_within_its_affinity_mask_and_memory():
    assert 1 <= host_limits.physical_cores() <= len(os.sched_getaffinity(0))
    available = host_limits.available_memory_bytes()
    assert available is None or 0 < available <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_quota_bounds_the_cores_auto_counts(monkeypatch):
    from ptjax.training import cpu_devices

    monkeypatch.setattr(cpu_devices, "weight_bytes", lambda name: GIB // 16)
    monkeypatch.setattr(host_limits, "group_available_memory", lambda *args: 4 * GIB)
    assert host_limits.available_memory_bytes() <= 4 * GIB
    # 32 rows of 2048 tokens: a device per core where the host has several (2 on CI's kind) ...
    if host_limits.physical_cores() >= 2:
        assert cpu_devices.auto_devices((32,), 32 * 2048, ("m",)) >= 2
    # ... and one within one CPU's quota.
    monkeypatch.setattr(host_limits, "cpu_quota", lambda *args: 1)
    assert host_limits.physical_cores() == 1
    assert cpu_devices.auto_devices((32,), 32 * 2048, ("m",)) == 1

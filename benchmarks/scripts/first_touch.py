"""Seconds (and kernel seconds, faults) to touch 1 GiB of new numpy memory, three times in one
process: on a VM whose balloon reports free memory to the hypervisor the first is slow
(BENCHMARKS.md "Round-to-round swings").

    python benchmarks/scripts/first_touch.py
"""

import time, resource, numpy as np
def r(): x = resource.getrusage(resource.RUSAGE_SELF); return x.ru_minflt, x.ru_stime
for i in range(3):
    f0, s0 = r(); t = time.perf_counter()
    a = np.ones(2**28, np.float32)  # 1 GiB, fresh mapping (mmap), freed at del
    dt = time.perf_counter() - t; f1, s1 = r()
    print(f"round {i}: 1 GiB first touch {dt:.3f} s, sys {s1-s0:.3f} s, faults {f1-f0}, {1/dt:.1f} GiB/s")
    del a

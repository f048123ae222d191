"""The machine a benchmark runs on: what it is (CPU, cores, memory, torch), how busy the other
users keep it (load average, CPU time of other processes during a timed window), this process's
peak memory, and the practical fp32 matmul peak that MFU is measured against."""
from __future__ import annotations

import math
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import torch


def hardware() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in _run(["lscpu"]).splitlines()
                  if line.startswith("Model name")), platform.processor() or "?")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "mem_gib": mem_kb / 2**20,
            "torch": torch.__version__, "python": platform.python_version(),
            "isa": torch.backends.cpu.get_cpu_capability()}


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def wait_for_quiet(max_load: float, budget_s: float, poll_s: float = 60) -> tuple[bool, float]:
    """Poll the 1-minute load average until it drops below max_load (others' tests share the
    cores); give up after budget_s. Returns (quiet, load when we started)."""
    t0 = time.time()
    while True:
        load = os.getloadavg()[0]
        if load < max_load:
            return True, load
        if time.time() - t0 + poll_s > budget_s:
            print(f"load average still {load:.2f} after {budget_s / 60:.0f} min: measuring "
                  f"anyway, the load is recorded with the numbers", flush=True)
            return False, load
        print(f"load average {load:.2f} >= {max_load}: waiting {poll_s:.0f}s", flush=True)
        time.sleep(poll_s)


def others_busy(window_s: float = 10) -> float:
    """Cores busy over the next window_s, while this process sleeps: the other users' load,
    without the tail of our own last measurement that the load average still carries."""
    b0, o0 = _busy_s(), _own_s()
    time.sleep(window_s)
    return max(0.0, (_busy_s() - b0 - (_own_s() - o0)) / window_s)


class CpuWindow:
    """CPU used by other processes during a window, in cores: all busy time from /proc/stat
    minus this process's own user+system time."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_s(), _own_s()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        own = _own_s() - self.own
        self.other = max(0.0, (_busy_s() - self.busy - own) / wall)
        self.own_cores = own / wall


def _busy_s() -> float:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def matmul_peak(n: int = 2048, reps: int = 6) -> float:
    """fp32 GFLOP/s of a large torch.mm (2 n^3 flops), best of `reps`: this CPU's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9

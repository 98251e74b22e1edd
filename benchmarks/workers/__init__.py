"""Benchmark workers: each runs in a process of its own (`python -m benchmarks.workers.NAME ARGS`) and prints one
JSON record as its last line."""


def peak_rss_mb() -> float:
    """This process's memory high-water mark in MB (ru_maxrss would include the forking parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")

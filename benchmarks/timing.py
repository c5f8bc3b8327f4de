"""Round-robin timing of the benchmark steps: every step runs in turn, so that a load
change on a shared machine affects all of them alike; a sample times as many
back-to-back calls as fill about 50 ms (small configurations), divided out."""

import math
import statistics
import time
from collections.abc import Callable, Mapping

Step = Callable[[], None]


def calls_per_sample(steps: Mapping[str, Step], sync: Step) -> dict[str, int]:
    """Runs every step twice (a warm-up, then timed) and returns how many calls of it
    fill about 50 ms."""
    calls = {}
    for method, step in steps.items():
        step()
        sync()
        start = time.perf_counter()
        step()
        sync()
        calls[method] = max(1, math.ceil(0.05 / (time.perf_counter() - start)))
    return calls


def median_ms(
    steps: Mapping[str, Step], calls: Mapping[str, int], repeats: int, sync: Step
) -> dict[str, float]:
    """The median time (ms) of one call of every step over ``repeats`` round-robin
    samples of ``calls[method]`` calls each."""
    times: dict[str, list[float]] = {m: [] for m in steps}
    for _ in range(repeats):
        for method, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls[method]):
                step()
            sync()
            times[method].append((time.perf_counter() - start) / calls[method])
    return {m: 1000 * statistics.median(t) for m, t in times.items()}

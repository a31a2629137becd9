"""The one timing loop of the benchmark, and the cells that stand for a figure that could not be measured."""

import statistics
import sys
import time
from collections import namedtuple

NOT_MEASURED = "not measured"


class Timing(namedtuple("Timing", ["first", "seconds", "result"])):
    """What `time_calls` measured: `first`, the seconds of the warm-up calls (compile + run for a first
    call); `seconds`, one entry per timed call; `result`, what `wait` returned for the last call."""

    @property
    def median(self):
        return statistics.median(self.seconds)

    @property
    def total(self):
        return sum(self.seconds)


def time_calls(call, repeats, warmup=1, wait=None, wait_each=True):
    """Times `warmup` calls of `call()` together, then each of `repeats` further calls.

    `wait(result)` blocks until the device has finished `result` and returns what to keep (default: the
    result itself, for calls that block). With `wait_each=False` only the last call of each part is waited
    for, so that the device may queue the calls (training steps); then only their `total` is meaningful.
    """
    wait = wait or (lambda result: result)
    start = time.perf_counter()
    for _ in range(warmup):
        result = call()
    result = wait(result)
    first = time.perf_counter() - start
    seconds = []
    for index in range(repeats):
        start = time.perf_counter()
        result = call()
        if wait_each or index == repeats - 1:
            result = wait(result)
        seconds.append(time.perf_counter() - start)
    return Timing(first, seconds, result)


def median_seconds(call, repeats):
    """The median of `repeats` timed calls of `call()` (which must block) after one warm-up call."""
    return time_calls(call, repeats).median


class NotMeasured:
    """A table cell that holds why a figure is missing instead of a number."""

    def __init__(self, reason):
        self.reason = reason

    def __str__(self):
        return f"{NOT_MEASURED} ({self.reason})" if self.reason else NOT_MEASURED


def attempt(fn):
    """`fn()`, or a `NotMeasured` naming the error (the table never shows a figure that failed)."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - reported in the table, the run goes on
        message = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
        return NotMeasured(f"error: {type(error).__name__}: {message}")


def shown(value):
    return str(value) if isinstance(value, NotMeasured) else f"{value:.3g}"


def pick(value, fn):
    return value if isinstance(value, NotMeasured) else fn(value)


class phase:
    """Prints how long a part of the run took to stderr (where the time of a run goes)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        print(f"[{time.perf_counter() - self.start:6.1f} s] {self.name}", file=sys.stderr, flush=True)


def progress(message):
    """A figure as soon as it is measured, to stderr: a run cut short (a device's time limit) keeps them."""
    print(f"[measured] {message}", file=sys.stderr, flush=True)

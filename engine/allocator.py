"""Keep freed CPU memory in the process (glibc), so large temporaries reuse it.

A search allocates and frees tensors of a few MB thousands of times. By default glibc adapts its
mmap and trim thresholds at run time and, depending on the order of allocations, may hand freed
heap back to the OS, so that every new tensor page-faults its memory in again, and the same candidate
evaluations cost much more CPU time at random from one process to the next (docs/performance.md,
"Evaluation speed"). Fixed thresholds make the reuse deterministic. Elsewhere this does nothing.

This is a process-wide setting, so entry points make it once at start-up (the CLI's ``main``, the
app's ``run_app``, a Ray sweep cell, the memory benchmark's fresh processes), never a library
function. It is not scoped: once a threshold is set, glibc has no way back to its adaptive ones.
It also holds during calibration, whose memory does not depend on it: the observers reserve what
they keep before the first forward (quant/observers.py), so each batch's freed activations leave a
clean heap for the next one (docs/performance.md, "Calibration memory from run to run").
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # glibc's upper limit; larger blocks are mapped and unmapped as usual
TRIM_THRESHOLD = 1 << 30    # free heap kept before any is returned to the OS


def keep_freed_memory() -> bool:
    """Set glibc's thresholds; True when they were set. Entry points call it once at start-up."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):   # not glibc (e.g. musl)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def return_freed_memory() -> bool:
    """Hand the freed heap back to the OS now (glibc ``malloc_trim``); True when it ran. For a
    measurement: the next phase's peak then starts from live memory, not from kept free heap."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim(0)
    return True

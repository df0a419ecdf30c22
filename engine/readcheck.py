"""Checked reading: what is wrong inside a file, said in one line, before any value of it is used.

The readers (scale files, diagnosis files, checkpoints) raise ``Malformed`` with what is wrong and where
inside the file; the loading function adds the file's name and raises its own contract's error.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class Malformed(Exception):
    """What is wrong inside a file, without its name: the loading function adds the name and raises
    DamagedFile (or its own contract's error)."""


def one_line(text: object) -> str:
    """An error text on one line (HDF5 and zip messages may span several)."""
    return " ".join(str(text).split())


def shown(value: Any) -> str:
    """A value as an error message quotes it: one line, and short whatever the file holds."""
    text = one_line(repr(value))
    return text if len(text) <= 60 else f"{text[:57]}..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bad_values(values: np.ndarray, positive: bool = False, integral: bool = False) -> str:
    """"3 NaN, 1 infinite" for the values that break the rule; "" when none does."""
    counts = {"NaN": np.isnan(values), "infinite": np.isinf(values)}
    finite = np.isfinite(values)
    if positive:
        counts["zero or negative"] = finite & (values <= 0)
    if integral:
        counts["non-integer"] = finite & (values != np.round(values))
    return ", ".join(f"{int(mask.sum())} {what}" for what, mask in counts.items() if mask.any())

"""The CLI's argparse types: each flag is checked as it is parsed, and argparse's error names the flag,
the allowed range and the value given, so bad input fails before any model is built
(tests/test_cli_contract.py). The search flags (``search/config.py``) use them too.
"""
from __future__ import annotations

import argparse
import functools
import math
from pathlib import Path
from typing import Callable

import timm
import torch

from .atomic import check_writable
from .data import DIGITS, SYNTHETIC
from .device import resolve_device
from .models import BUILTIN_MODELS, ModelLoadError, _check_timm_name
from .quant import parse_bits
from .quant.model import transformer_blocks

SEED_MAX = 2**32 - 1
BITS_RANGE = (2, 16)           # an activation or attention bit-width (parse_bits' range)


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer from ``low`` to ``high`` (no upper bound when None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value

    return parse


positive_int = int_range(1)
seed = int_range(0, SEED_MAX)
bits = int_range(*BITS_RANGE)


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def bit_widths(text: str) -> str:
    """``W4A8``: weights 1-16, activations 2-16 bits."""
    try:
        parse_bits(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def plan_file(text: str):
    """A bit plan (``engine/plan/file.py``): a plan file (JSON) or a run file (.h5), read and checked now."""
    from .plan.file import PlanFileError, load_plan   # the run file reader imports the engine

    existing_file(text)
    try:
        return load_plan(text)
    except (PlanFileError, OSError) as exc:
        raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from None


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` that exists here."""
    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


@functools.lru_cache(maxsize=None)
def vit_model(name: str) -> str:
    """A built-in model or a timm model whose transformer blocks the tool can find, told from a copy built
    on the ``meta`` device (no memory, no weights: a fraction of a second)."""
    if name in BUILTIN_MODELS:
        return name
    try:
        _check_timm_name(name)
    except ModelLoadError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    with torch.device("meta"):
        model = timm.create_model(name)
    try:
        transformer_blocks(model)
    except TypeError:
        raise argparse.ArgumentTypeError(
            f"{name} is not a Vision Transformer this tool can quantize: {type(model).__name__} has no transformer "
            "blocks (ViT/DeiT-style 'blocks' or Swin-style 'layers.*.blocks')") from None
    return name


def existing_file(text: str) -> str:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    return text


def existing_folder(text: str) -> str:
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder" if Path(text).exists() else
                                         f"no such folder: {text}")
    return text


def data_source(text: str) -> str:
    """The built-in ``digits``, ``synthetic`` images, or an image folder that exists."""
    if text in (DIGITS, SYNTHETIC) or Path(text).expanduser().is_dir():
        return text
    what = "is a file, not an image folder" if Path(text).expanduser().exists() else "is no folder"
    raise argparse.ArgumentTypeError(f"{text} {what} (train/<class>/*, val/<class>/*), nor {DIGITS} or {SYNTHETIC}")


def _file_above(path: Path) -> Path | None:
    """The first of ``path``'s folders that is a file (no folder can be made under it)."""
    return next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)


def output_file(text: str) -> str:
    """A file this process can write (its folder is created if missing), checked before any work."""
    above = _file_above(Path(text))
    if above is not None:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {above} is a file, not a folder")
    try:
        check_writable(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {exc.strerror or exc}") from None
    return text


def output_folder(text: str) -> str:
    """A folder this process can create and write into."""
    path = Path(text)
    above = path if path.exists() and not path.is_dir() else _file_above(path)
    if above is not None:
        raise argparse.ArgumentTypeError(f"cannot write into {text}: {above} is a file, not a folder")
    try:
        check_writable(path / ".write-check")
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write into {text}: {exc.strerror or exc}") from None
    return text

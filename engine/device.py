"""Pick the torch device: CUDA when available, else CPU; ``--device`` overrides (DESIGN §7)."""
from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/"auto" -> cuda if available else cpu; an explicit CUDA device must exist."""
    if name is None or name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name.strip())
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here: use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r} requested but only {count} CUDA device(s) exist")
    return device

"""RunRecord: everything a scale file holds (DESIGN §2 "Run", §5 layout), and the one rule that
says whether a run file or a checkpoint belongs to the run about to be made (``identity_mismatch``)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .quant import QuantConfig, ScaleSet

log = logging.getLogger(__name__)

# RunSpec fields that do not make a run another run: the device (a run may continue on another one)
# and where the weights came from (their hash, ``weights_sha256``, identifies them, wherever the file lies).
EXECUTION = frozenset({"device", "compile"})     # where and how a run computes, not what it computes
NOT_IDENTITY = EXECUTION | {"weights", "pretrained"}


@dataclass
class History:
    """Per evaluation: loss, and the (pass, block) it belonged to; per block step: held-out top-1."""
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    eval_pass: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    eval_block: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    heldout_top1: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    step_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    block_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    pass_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


@dataclass
class RunRecord:
    """A quantization (``base is None``) or a search run (``base`` = scales before the search).

    ``scales`` are the scales to use: the calibrated ones for a plain quantize, the refined
    (selected) ones after a search.
    """
    model_name: str
    model_source: str
    weights_sha256: str
    quant: QuantConfig
    calibration: dict[str, Any]      # dataset, n_samples, seed, input_size, mean, std
    scales: ScaleSet
    seed: int = 0
    base: ScaleSet | None = None
    search: dict[str, Any] | None = None   # search parameters (stored as JSON)
    history: History | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # fp_top1, base_top1, refined_top1, ...
    spec: dict[str, Any] | None = None     # the RunSpec as made (device excluded); None in older files
    provenance: dict[str, Any] | None = None   # how it was computed (provenance.py); None in older files
    planning: dict[str, Any] | None = None     # how ``plan`` chose the bit plan (engine/plan); None otherwise


def _plain(values: Any) -> Any:
    """JSON's view of a value (tuples become lists), so a value read back from a file compares equal."""
    return json.loads(json.dumps(values))


def spec_values(spec: Any) -> dict[str, Any]:
    """A RunSpec as the run file records it: every field but how it was executed, as plain JSON values
    (so a run file is the same whatever device type and compile mode computed it)."""
    return _plain({k: v for k, v in spec.to_dict().items() if k not in EXECUTION})


def run_identity(spec: dict[str, Any], search: dict[str, Any] | None, weights_sha256: str | None) -> dict[str, Any]:
    """What makes two runs the same run: every RunSpec field (but NOT_IDENTITY), the weights' hash and
    the search's identity values (``search.config.search_identity``, given here). Checkpoints store it
    as is; run files hold its parts (``search.identity.record_identity``)."""
    identity: dict[str, Any] = {"spec": _plain({k: v for k, v in spec.items() if k not in NOT_IDENTITY}),
                                "config": _plain(search or {})}
    if weights_sha256:
        identity["weights_sha256"] = weights_sha256
    return identity


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    """``{"spec": {"quant": {"w_bits": 4}}}`` -> ``{"spec.quant.w_bits": 4}``: one entry per compared field."""
    out: dict[str, Any] = {}
    for key, value in identity.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            out[key] = value
    return out


def _shown(key: str, value: Any) -> str:
    return f"{value[:12]}…" if key.endswith("sha256") and isinstance(value, str) else repr(value)


def identity_mismatch(saved: dict[str, Any], wanted: dict[str, Any], where: str = "") -> str | None:
    """The first field of ``wanted`` that ``saved`` holds with another value, as
    ``"spec.calib_size 50 (this run: 100)"``; None when they agree. A field ``saved`` lacks (an older
    file) is unknown, not a difference: it is named in a log line and not compared."""
    saved_flat = _flat(saved)
    unknown = []
    for key, value in _flat(wanted).items():
        if key not in saved_flat:
            unknown.append(key)
        elif saved_flat[key] != value:
            return f"{key} {_shown(key, saved_flat[key])} (this run: {_shown(key, value)})"
    if unknown:
        log.info("%s does not record %s (an older file); compared what it records", where or "the saved run",
                 ", ".join(unknown))
    return None

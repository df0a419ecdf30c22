"""A stopped run rebuilt from its checkpoint alone: the one path the CLI's ``--resume``, the app's
*Resume run…* and a sweep's interrupted cell share.

A checkpoint holds the whole RunSpec as made (the weights file as given, ``pretrained``, the data
folder, the held-out source) and the search config, so nothing has to be typed again. The weights
are identified by their hash, not their path: a weights file that moved is asked for
(``WeightsMissing``), and one given in its place must have the recorded hash.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..models import file_sha256
from ..pipeline import RunSpec
from ..quant import QuantConfig
from ..runrecord import identity_mismatch, spec_values
from .checkpoint import Checkpoint
from .config import SearchConfig
from .identity import saved_identity, search_run_identity


class WeightsMissing(FileNotFoundError):
    """The run's weights file is not where the checkpoint says; a front end asks for it."""

    def __init__(self, path: str, sha256: str | None) -> None:
        self.path, self.sha256 = path, sha256
        recorded = f" (sha256 {sha256[:12]}…)" if sha256 else ""
        super().__init__(f"the run's weights file {path}{recorded} is not there any more; give the file "
                         "(--weights FILE on the command line)")


def recorded_spec(checkpoint: Checkpoint) -> RunSpec:
    """The RunSpec the checkpoint's run was made with. Version 1 checkpoints stored only its identity,
    without the weights file: their runs rebuild with ``weights=None`` (right for the demo and for
    random init; a weights-file run then fails the identity check, naming the weights hash)."""
    values: dict[str, Any] = dict(checkpoint.spec or checkpoint.identity.get("spec") or {})
    if "quant" not in values or "model" not in values:
        raise CheckpointError("the checkpoint does not say which model and quantization it belongs to")
    values["quant"] = QuantConfig(**{**values["quant"], "allow_float": tuple(values["quant"].get("allow_float", ()))})
    known = set(RunSpec.__dataclass_fields__)
    return RunSpec(**{k: v for k, v in values.items() if k in known})


def recorded_config(checkpoint: Checkpoint) -> SearchConfig:
    values = checkpoint.config or checkpoint.identity.get("config")
    if values is None:
        raise CheckpointError("the checkpoint does not record its search options")
    return SearchConfig.from_dict(values)


def with_weights(spec: RunSpec, checkpoint: Checkpoint, weights: str | Path | None) -> RunSpec:
    """``spec`` loading ``weights`` instead of the recorded file (which must then have the recorded
    hash); WeightsMissing when neither is given and the recorded file is gone."""
    expected = checkpoint.identity.get("weights_sha256")
    if weights is not None:
        actual = file_sha256(Path(weights))
        if expected and actual != expected:
            raise ValueError(f"{weights} has sha256 {actual[:12]}…, but the run was made with weights "
                             f"sha256 {expected[:12]}…: give the run's own weights file")
        return replace(spec, weights=str(weights), pretrained=False)
    if spec.weights is not None and not Path(spec.weights).exists():
        raise WeightsMissing(spec.weights, expected)
    return spec


def check_before_work(checkpoint: Checkpoint, path: Path, spec: RunSpec, config: SearchConfig) -> None:
    """Refuse a checkpoint of another run before any model is built: everything but the weights hash
    and the base scales, which only loading and calibrating can tell (checked again then)."""
    saved = saved_identity(checkpoint.identity)
    wanted = search_run_identity(spec_values(spec), config.to_dict(), saved.get("weights_sha256"))
    problem = identity_mismatch(saved, wanted, f"checkpoint {path}")
    if problem:
        raise CheckpointError(f"checkpoint {path} belongs to another run ({problem}); resume with the same model, "
                         "weights, data, quantizer, seed and search options")

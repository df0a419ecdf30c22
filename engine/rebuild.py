"""A run's quantized model rebuilt from its run file: the one path ``eval --scales``, the app's
*Evaluate scales…* and compare's layer view share.

Run files hold scales, not weights, so the FP model is loaded again and must be the one the run was
made from: its weights hash is checked against the file's before any result is trusted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from .data import Splits
from .models import ModelInfo, create_model
from .pipeline import RunSpec, load_model_and_data
from .quant import QuantConfig, QuantizedModel
from .runrecord import RunRecord
from .scalefile import ScaleFileError, apply_run

log = logging.getLogger(__name__)


@dataclass
class Rebuilt:
    qmodel: QuantizedModel          # the run's scales loaded, on ``device``
    info: ModelInfo
    splits: Splits
    device: torch.device


def check_weights(record: RunRecord, info: ModelInfo) -> None:
    """ScaleFileError unless ``info`` describes the weights the run was made with (by hash)."""
    if not record.weights_sha256:
        log.warning("the run file records no weights hash; the loaded weights (%s) are not checked", info.source)
        return
    if record.weights_sha256 != info.weights_sha256:
        raise ScaleFileError(
            f"the run was made with weights sha256 {record.weights_sha256[:12]}… ({record.model_source}), "
            f"but the loaded {info.name} weights are sha256 {info.weights_sha256[:12]}… ({info.source}); "
            "load the run's own weights")


def _quantized(record: RunRecord, model: torch.nn.Module, info: ModelInfo, device: torch.device,
               use_base: bool) -> QuantizedModel:
    """Wrap ``model``, move the wrapper to ``device`` (its quantizers' buffers with it), then load the
    scales, so every scale lands on the device of the module it quantizes."""
    qmodel = QuantizedModel(model, record.quant).to(device)
    apply_run(record, qmodel, info.name, use_base=use_base)   # checks the model name and every shape
    check_weights(record, info)
    return qmodel


def recorded_spec(record: RunRecord, data: str | None = None, device: str | None = None) -> RunSpec:
    """The RunSpec the run was made with (its model, weights, data and seed), ``data`` and ``device``
    overriding it (a folder that moved, another machine). Files older than the recorded spec know
    only the model and seed."""
    values = dict(record.spec or {"model": record.model_name, "seed": record.seed})
    values.update(quant=QuantConfig(**values["quant"]) if "quant" in values else record.quant, device=device)
    if data is not None:
        values["data"] = data
    return RunSpec(**values)


def rebuild(record: RunRecord, spec: RunSpec, use_base: bool = False) -> Rebuilt:
    """Load ``spec``'s model and data (as ``pipeline.load_model_and_data``, with the run's quantization)
    and put the run's refined scales (its base scales with ``use_base``) into it."""
    model, info, splits, device = load_model_and_data(replace(spec, quant=record.quant))
    return Rebuilt(_quantized(record, model, info, device, use_base), info, splits, device)


def _source_weights(record: RunRecord) -> dict:
    """``create_model`` arguments that load the weights named by the run's ``model_source``."""
    source = record.model_source
    if source.startswith("file:"):
        return {"weights": source.removeprefix("file:")}
    return {"pretrained": source == "timm-pretrained"}


def rebuild_model(record: RunRecord) -> QuantizedModel:
    """The run's own model (weights from its ``model_source``, hash checked) with its scales, on the
    CPU and without data: for looking at weights, not for measuring accuracy."""
    model, info = create_model(record.model_name, **_source_weights(record))
    return _quantized(record, model, info, torch.device("cpu"), use_base=False)

"""From a run specification to a calibrated QuantizedModel: the one path the CLI, the app and sweeps share."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from .data import Splits, calibration_batches, check_compatible, load_splits
from .device import resolve_device
from .models import DEMO_MODEL, ModelInfo, create_model
from .quant import QuantConfig, QuantizedModel, quantize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """What to quantize, on which data, where. Search options live in SearchConfig."""
    model: str = DEMO_MODEL
    weights: str | None = None
    pretrained: bool = False
    data: str | None = None
    quant: QuantConfig = field(default_factory=QuantConfig)
    calib_size: int = 1000
    batch_size: int = 100
    seed: int = 0
    device: str | None = None
    heldout_from: str = "train"        # a folder's held-out images: a draw from train/ or from val/
    compile: str = "auto"              # torch.compile of candidate evaluation (search/compiled.py): same results

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prepared:
    spec: RunSpec
    info: ModelInfo
    splits: Splits
    device: torch.device
    qmodel: QuantizedModel
    calib: list[torch.Tensor]          # calibration image batches on device
    calibration_seconds: float

    def calibration_meta(self) -> dict:
        meta = self.splits.describe()
        return {"dataset": meta["dataset"], "n_samples": meta["n_calibration"], "seed": self.spec.seed,
                "input_size": list(self.info.input_size), "mean": list(self.info.mean), "std": list(self.info.std),
                "heldout_source": meta["heldout_source"], "class_map": meta["class_map"]}


def load_model_and_data(spec: RunSpec) -> tuple[torch.nn.Module, ModelInfo, Splits, torch.device]:
    device = resolve_device(spec.device)
    model, info = create_model(spec.model, weights=spec.weights, pretrained=spec.pretrained)
    splits = load_splits(spec.data, info, calib_size=spec.calib_size, seed=spec.seed, heldout_from=spec.heldout_from)
    check_compatible(splits, info)
    return model.to(device).eval(), info, splits, device


def prepare(spec: RunSpec) -> Prepared:
    """Load the model and data, then calibrate the quantizer on the calibration split."""
    model, info, splits, device = load_model_and_data(spec)
    calib = calibration_batches(splits, spec.batch_size, device)
    start = time.perf_counter()
    qmodel = quantize(model, spec.quant, calib)
    seconds = time.perf_counter() - start
    log.info("calibrated %s %s on %d images in %.1f s", spec.quant.quantizer, spec.quant.bits_label,
             sum(len(b) for b in calib), seconds)
    return Prepared(spec, info, splits, device, qmodel, calib, seconds)

"""Named quantization schemes ("quantizers") and the one entry point that applies them."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from ..progress import report
from .bitplan import PlanMismatch
from .coverage import check_coverage
from .model import QuantConfig, QuantizedModel


class Quantizer(Protocol):
    """Calibrates every FakeQuantizer of a freshly wrapped model from calibration batches."""

    def calibrate(self, qmodel: QuantizedModel, batches: Sequence[torch.Tensor]) -> None: ...


QUANTIZERS: dict[str, Callable[[], Quantizer]] = {}


def register_quantizer(name: str):
    def decorate(factory: Callable[[], Quantizer]):
        if name in QUANTIZERS:
            raise ValueError(f"quantizer {name!r} registered twice")
        QUANTIZERS[name] = factory
        return factory

    return decorate


def available_quantizers() -> list[str]:
    return list(QUANTIZERS)


@torch.no_grad()
def run_batches(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """One forward per batch (the observers watch), each reported to a listening front end."""
    for done, images in enumerate(batches, 1):
        model(images)
        report("calibration batches", done, len(batches))


def quantize(model: nn.Module, config: QuantConfig, batches: Sequence[torch.Tensor]) -> QuantizedModel:
    """Wrap ``model`` in place and calibrate it with ``config.quantizer`` on ``batches``.

    Raises UncoveredMatmul (the model left wrapped, uncalibrated) if a probe forward of two calibration
    images finds a matmul-like op on a float operand that ``config.allow_float`` does not name."""
    if config.quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {config.quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    if not batches:
        raise ValueError("calibration needs at least one batch of images")
    qmodel = QuantizedModel(model, config)
    check_coverage(qmodel, batches[0][:2])
    QUANTIZERS[config.quantizer]().calibrate(qmodel, batches)
    check_plan_kept(qmodel)
    return qmodel


def check_plan_kept(qmodel: QuantizedModel) -> None:
    """PlanMismatch if the quantizer calibrated a planned point at another width than the plan's (FQ-ViT's
    Log-Int-Softmax is 4 bits whatever it is asked)."""
    quantizers = qmodel.quantizers()
    for name, bits in qmodel.config.plan:
        owner, _, role = name.rpartition("/")
        quantizer = quantizers[(owner, role)]
        if quantizer.calibrated and quantizer.bits != bits:
            raise PlanMismatch(f"the bit plan gives {name} {bits} bits, but {qmodel.config.quantizer} fixes it at "
                               f"{quantizer.bits} bits: leave it out of the plan")


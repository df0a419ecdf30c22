"""Engine jobs other than the search, as event generators the worker thread consumes.

``evaluate_scales``: put a run file's refined scales into the model selected in the run panel and
measure test top-1, like ``python -m engine eval --scales FILE``. A file made for another model
fails in the engine (``ScaleFileError`` naming the model or the first layer that differs).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from engine.evaluate import top1
from engine.pipeline import RunSpec, load_model_and_data
from engine.quant import QuantizedModel
from engine.scalefile import apply_run, load_run
from engine.search.events import Stage


@dataclass(frozen=True)
class ScalesEvaluated:
    path: str
    model: str
    bits: str
    fp_top1: float
    quant_top1: float
    n_test: int


def evaluate_scales(spec: RunSpec, path: str | Path) -> Iterator[Stage | ScalesEvaluated]:
    path = Path(path)
    yield Stage(f"reading {path.name}")
    record = load_run(path)
    yield Stage(f"loading {spec.model} and its data")
    model, info, splits, device = load_model_and_data(replace(spec, quant=record.quant))
    qmodel = QuantizedModel(model, record.quant)
    apply_run(record, qmodel, info.name)
    yield Stage("measuring top-1 on the test split")
    with qmodel.full_precision():
        fp = top1(qmodel, splits.test, spec.batch_size, device)
    quant = top1(qmodel, splits.test, spec.batch_size, device)
    yield ScalesEvaluated(str(path), info.name, record.quant.bits_label, fp.top1, quant.top1, fp.n)

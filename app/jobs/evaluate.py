"""EvaluateJob: a run file's refined scales put into the model selected in the run panel, test top-1 measured.

Like ``python -m engine eval --scales FILE`` (both through ``engine.rebuild``). A file made for another
model or other weights fails in the engine (``ScaleFileError`` naming the model, the first layer that
differs, or both weights hashes).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from engine.evaluate import top1
from engine.pipeline import RunSpec
from engine.rebuild import rebuild
from engine.scalefile import load_run
from engine.events import Stage


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
    rebuilt = rebuild(record, spec)
    qmodel, test = rebuilt.qmodel, rebuilt.splits.test
    yield Stage("measuring top-1 on the test split")
    with qmodel.full_precision():
        fp = top1(qmodel, test, spec.batch_size, rebuilt.device)
    quant = top1(qmodel, test, spec.batch_size, rebuilt.device)
    yield ScalesEvaluated(str(path), rebuilt.info.name, record.quant.bits_label, fp.top1, quant.top1, fp.n)


@dataclass(frozen=True)
class EvaluateJob:
    spec: RunSpec
    path: Path
    name: ClassVar[str] = "evaluation"
    shows_run: ClassVar[bool] = False

    def events(self) -> Iterator[Stage | ScalesEvaluated]:
        return evaluate_scales(self.spec, self.path)

    def result_of(self, event: Any) -> Any:
        return event if isinstance(event, ScalesEvaluated) else None

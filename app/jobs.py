"""Engine jobs other than the search, as event generators the worker thread consumes.

``evaluate_scales``: put a run file's refined scales into the model selected in the run panel and
measure test top-1, like ``python -m engine eval --scales FILE`` (both through ``engine.rebuild``). A
file made for another model or other weights fails in the engine (``ScaleFileError`` naming the model,
the first layer that differs, or both weights hashes).

``export_run_file``: write a run file's model as ONNX QDQ or AIMET encodings, like ``python -m engine
export``; the engine's ``Exported`` event (files, parity) is the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from engine.evaluate import top1
from engine.export import load_export
from engine.pipeline import RunSpec
from engine.rebuild import rebuild
from engine.scalefile import load_run
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
    rebuilt = rebuild(record, spec)
    qmodel, test = rebuilt.qmodel, rebuilt.splits.test
    yield Stage("measuring top-1 on the test split")
    with qmodel.full_precision():
        fp = top1(qmodel, test, spec.batch_size, rebuilt.device)
    quant = top1(qmodel, test, spec.batch_size, rebuilt.device)
    yield ScalesEvaluated(str(path), rebuilt.info.name, record.quant.bits_label, fp.top1, quant.top1, fp.n)


def export_run_file(path: str | Path, out: str | Path, fmt: str, use_base: bool, check: bool | None
                    ) -> Iterator[Any]:
    """The engine's export of the run file at ``path``; without the export extra, ``load_export``'s
    ValueError naming it (raised here, in the worker, so it reaches the error dialog like any failure)."""
    path = Path(path)
    yield Stage(f"reading {path.name}")
    export = load_export()
    record = load_run(path)
    yield from export.export_run(record, out, fmt, use_base=use_base, check=check)

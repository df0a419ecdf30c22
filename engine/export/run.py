"""Export a run file: the one generator the CLI (``export``) and the app's worker consume.

It yields ``Stage`` events while it works and one ``Exported`` at the end, so the app can show progress
and stop between steps like any other job.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import onnx
import torch

from ..data import DataError
from ..events import Stage
from ..pipeline import RunSpec
from ..quant import QuantizedModel
from ..rebuild import rebuild, rebuild_model, recorded_spec
from ..runrecord import RunRecord
from .formats import FORMATS
from .aimet import write_aimet
from .graph import trace_marked
from .onnx_qdq import ExportError, check_exportable, qdq_model
from .parity import Parity, check_parity, cpu_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exported:
    format: str
    files: tuple[str, ...]
    scales: str                      # "refined" or "base" (a search run), "calibrated" (a quantize run)
    n_points: int                    # quantization points of the run
    n_quantize_nodes: int            # QuantizeLinear nodes written (onnx-qdq) or encodings (aimet)
    opset: int
    parity: Parity | None            # None when the check did not run

    def to_dict(self) -> dict:
        out = asdict(self)
        out["files"] = list(self.files)
        return out


def _model_and_test_split(record: RunRecord, spec: RunSpec, check: bool | None):
    """The run's quantized model, and its test split and device when the parity check runs.

    ``check=None`` checks when the data loads and says why not otherwise; ``True`` insists."""
    if check is False:
        return rebuild_model(record), None, torch.device("cpu")
    try:
        rebuilt = rebuild(record, spec)
    except (DataError, FileNotFoundError) as exc:
        if check:
            raise
        log.warning("no parity check: the run's data does not load (%s); pass --data to check", exc)
        return rebuild_model(record), None, torch.device("cpu")
    return rebuilt.qmodel, rebuilt.splits.test, rebuilt.device


def _write(fmt: str, qmodel: QuantizedModel, record: RunRecord, out: Path, device: torch.device):
    example = torch.zeros((1, *record.calibration["input_size"]), device=device)
    marked = trace_marked(qmodel, example)
    if fmt == "onnx-qdq":
        model = qdq_model(marked, record.scales)
        onnx.save(model, out)
        count = sum(node.op_type == "QuantizeLinear" for node in model.graph.node)
        return (out,), count, model.opset_import[0].version
    files = write_aimet(marked, record.scales, out)
    return files, record.scales.n_points(), marked.opset_import[0].version


def export_run(record: RunRecord, out: str | Path, fmt: str = "onnx-qdq", use_base: bool = False,
               check: bool | None = None, data: str | None = None, device: str | None = None,
               batch_size: int | None = None) -> Iterator[Stage | Exported]:
    """Write ``record``'s model in ``fmt`` to ``out``; with the check, compare it in onnxruntime with
    the torch model on the run's test split (fake-quant for onnx-qdq, FP for aimet's FP model)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    which = "base" if use_base else ("refined" if record.base is not None else "calibrated")
    if use_base:
        if record.base is None:
            raise ExportError("this run file holds one set of scales (a quantize run): export it without --base")
        record = replace(record, scales=record.base)
    check_exportable(record.scales, record.quant.quantizer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = recorded_spec(record, data, device)
    yield Stage(f"rebuilding {record.model_name} {record.quant.quantizer} {record.quant.bits_label} "
                f"with the run's {which} scales")
    qmodel, test, torch_device = _model_and_test_split(record, spec, check)
    yield Stage(f"tracing the model and writing {fmt} to {out}")
    files, count, opset = _write(fmt, qmodel, record, out, torch_device)
    parity = None
    if test is not None:
        yield Stage(f"parity check in onnxruntime on the test split ({len(test)} images)")
        session = cpu_session(files[0])
        if fmt == "onnx-qdq":
            parity = check_parity(session, qmodel, test, batch_size or spec.batch_size, torch_device)
        else:
            with qmodel.full_precision():
                parity = check_parity(session, qmodel, test, batch_size or spec.batch_size, torch_device, "FP")
    yield Exported(fmt, tuple(str(f) for f in files), which, record.scales.n_points(), count, opset, parity)

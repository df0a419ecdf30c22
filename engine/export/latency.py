"""CPU latency of a run's exported model: onnxruntime's int8 QDQ graph against the same graph in FP32.

A ratio measured in one process: the two sessions alternate call by call, so whatever load a
shared machine carries falls on both alike (``python -m engine bench --onnx-latency RUN.h5``).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch

from ..rebuild import rebuild_model
from ..runrecord import RunRecord
from .aimet import fp_model
from .graph import trace_marked
from .onnx_qdq import qdq_model
from .parity import cpu_session


def latency_ratios(record: RunRecord, batches: Sequence[int] = (1, 32), reps: int = 20,
                   threads: int = 1) -> list[dict]:
    """Per batch size: median milliseconds of the QDQ and the FP32 model and their ratio."""
    input_size = tuple(record.calibration["input_size"])
    marked = trace_marked(rebuild_model(record), torch.zeros((1, *input_size)))
    with tempfile.TemporaryDirectory() as folder:
        paths = {"qdq": Path(folder) / "qdq.onnx", "fp32": Path(folder) / "fp32.onnx"}
        onnx.save(qdq_model(marked, record.scales), paths["qdq"])
        onnx.save(fp_model(marked)[0], paths["fp32"])
        sessions = {kind: cpu_session(path, threads=threads) for kind, path in paths.items()}
    rows = []
    for batch in batches:
        images = np.random.default_rng(0).normal(size=(batch, *input_size)).astype(np.float32)
        times: dict[str, list[float]] = {kind: [] for kind in sessions}
        for session in sessions.values():
            session.run(None, {"images": images})   # warm-up
        for _ in range(reps):
            for kind, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"images": images})
                times[kind].append(time.perf_counter() - start)
        qdq_ms, fp_ms = (1e3 * float(np.median(times[kind])) for kind in ("qdq", "fp32"))
        rows.append({"batch": batch, "reps": reps, "threads": threads, "qdq_ms": qdq_ms, "fp32_ms": fp_ms,
                     "qdq_over_fp32": qdq_ms / fp_ms})
    return rows

"""Parity of an exported model in onnxruntime (CPU) with the fake-quant model it came from, on the
run's test split: each model's top-1, how often their argmax agrees, and the largest logit difference.

The two differ only in float arithmetic order (onnxruntime's integer kernels accumulate exactly where
torch sums floats), so disagreements come from near-ties, and a scale that went astray would show as
a large logit difference at once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ..data import iterate


@dataclass(frozen=True)
class Parity:
    reference: str            # what the ONNX model is compared with: "fake-quant" or "FP" (torch)
    onnx_top1: float          # percent
    torch_top1: float         # percent
    agreement: float          # percent of images whose argmax agrees
    max_logit_diff: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"onnxruntime top-1 {self.onnx_top1:.2f}%  torch {self.reference} {self.torch_top1:.2f}%  "
                f"argmax agreement {self.agreement:.2f}%  max |logit diff| {self.max_logit_diff:.4g}  (n={self.n})")


def cpu_session(model_path: str | Path, optimized_path: str | Path | None = None,
                threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session; ``optimized_path`` keeps the graph as onnxruntime rewrote it (which
    Q/DQ groups became integer kernels)."""
    options = ort.SessionOptions()
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(session: ort.InferenceSession, model: nn.Module, dataset, batch_size: int,
                 device: torch.device, reference: str = "fake-quant") -> Parity:
    """Both models on every image of ``dataset``, one batch at a time."""
    input_name = session.get_inputs()[0].name
    onnx_correct = torch_correct = agree = n = 0
    max_diff = 0.0
    for images, labels in iterate(dataset, batch_size, device):
        expected = model(images).float().cpu().numpy()
        got = session.run(None, {input_name: images.cpu().numpy()})[0]
        labels = labels.cpu().numpy()
        onnx_correct += int((got.argmax(1) == labels).sum())
        torch_correct += int((expected.argmax(1) == labels).sum())
        agree += int((got.argmax(1) == expected.argmax(1)).sum())
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        n += len(labels)
    if n == 0:
        raise ValueError("the parity check has no images: the test split is empty")
    return Parity(reference, 100.0 * onnx_correct / n, 100.0 * torch_correct / n, 100.0 * agree / n, max_diff, n)

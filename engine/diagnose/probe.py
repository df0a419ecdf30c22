"""What every configuration of the model is scored on: the search's fitness loss to the FP outputs on
the calibration images, and top-1 on the held-out split (never the test split).

Both sets of images go through the same forward, so a configuration is run once from wherever the
diagnosis restarts it: from the images, or from the tensor entering a block (``Segments.run_after``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..data import TensorImages
from ..search.evaluator import Fitness, mean_over_batches
from ..search.segments import Segments


@dataclass(frozen=True)
class Score:
    loss: float      # the fitness loss to the FP outputs, over the calibration images
    top1: float      # held-out top-1, percent


class Probe:
    """Calibration batches (scored by ``fitness``) followed by held-out batches (scored by top-1)."""

    def __init__(self, segments: Segments, fitness: Fitness, calib: Sequence[torch.Tensor], heldout: TensorImages,
                 batch_size: int, device: torch.device) -> None:
        if len(heldout) == 0:
            raise ValueError("the held-out split has no readable images: the diagnosis needs it for top-1")
        self.segments, self.fitness = segments, fitness
        self.n_calib = len(calib)
        heldout_batches = [heldout.images[i:i + batch_size].to(device) for i in range(0, len(heldout), batch_size)]
        self.labels = [heldout.labels[i:i + batch_size].to(device) for i in range(0, len(heldout), batch_size)]
        self.images = list(calib) + heldout_batches
        self.n_heldout = len(heldout)

    def _pre_logits(self, batch: int) -> bool:
        """Calibration batches give the features the fitness compares; held-out batches give logits."""
        return self.fitness.pre_logits and batch < self.n_calib

    def score(self, outputs: Sequence[torch.Tensor]) -> Score:
        losses = torch.stack([self.fitness.batch_loss(out, j) for j, out in enumerate(outputs[:self.n_calib])])
        correct = sum(int((out.argmax(dim=-1) == labels).sum()) for out, labels in
                      zip(outputs[self.n_calib:], self.labels))
        return Score(float(mean_over_batches(losses[None])[0]), 100.0 * correct / self.n_heldout)

    @torch.no_grad()
    def score_from_images(self) -> Score:
        """The whole forward, for a point before the first block."""
        return self.score([self.segments.forward(x, self._pre_logits(j)) for j, x in enumerate(self.images)])

    @torch.no_grad()
    def entering_first_block(self) -> list[torch.Tensor]:
        """Per batch, the tensor entering ``blocks[0]``'s join."""
        return [self.segments.stem(x) for x in self.images]

    @torch.no_grad()
    def advance(self, entering: list[torch.Tensor], block: int) -> list[torch.Tensor]:
        """From the tensors entering ``blocks[block]``'s join to those entering the next one's (or the head)."""
        return [self.segments.blocks[block](self.segments.joins[block](x)) for x in entering]

    @torch.no_grad()
    def score_from(self, entering: list[torch.Tensor], block: int) -> Score:
        """Blocks ``block..`` and the head, from the tensors entering ``blocks[block]``'s join
        (``block`` = the number of blocks: the head alone)."""
        return self.score([self.segments.run_after(x, block - 1, self._pre_logits(j))
                           for j, x in enumerate(entering)])

"""The joint phase of the ``guided`` search: every block's scales moved together, before the block steps.

The block-wise search moves one block at a time against the exact fitness; a move that only helps
together with a move in another block is out of its reach. The joint phase takes the
straight-through gradient (LSQ's gradient of a scale) of the fitness with respect to the log of
every searched scale of every block at once, through the whole model, and runs Adam on it, its
learning rate decaying along a cosine over ``max_steps``. A step takes a part of a calibration
batch (``step_images``, 25 by default: every fourth image of a 100-image batch), not the whole
batch: a quarter of the images per step, and on held-out no worse a result (docs/results.md).
Adam's step is about its learning rate in every coordinate, so each coordinate's log-scale is
counted in its mutation range (bit-aware, ``space.py``): the first step moves a 4-bit weight scale
by 0.5 % and an 8-bit one by 16 times less.

The calibration batches are split in two (alternate batches; one batch: its two halves). Adam steps
on the first half, each batch of it in interleaved parts of at most ``step_images`` images. The
point checked is the exponential average of Adam's points (``AVERAGE``), not the last one: each
step follows one part, and the average smooths those wiggles out. Every
``CHECK_EVERY`` steps the fitness of the second half is measured at that point, and the phase
keeps its best point and stops after ``PATIENCE`` checks without a better one. The result is
then measured with the exact fitness on all the calibration images and kept only if it lowers the
loss, as every move of the search is: the joint phase never raises the loss.

The phase can stop and go on: at every check it yields its ``JointProgress`` (Adam's point, its
moment estimates, the average, the best point and the counters), which the search writes to its
checkpoint; started again from it, the phase continues bit for bit as if it had not stopped.

Its null (``guided-null``) runs the same phase with a standard normal vector in place of each
gradient: the same steps, checks, early stopping and acceptance, without the gradient. The block
steps' two-halves acceptance (guided.py) checks on the same half (``checking_batches``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator, Sequence

import numpy as np
import torch
from torch.func import functional_call

from .evaluator import Fitness
from .segments import Segments
from .space import BlockSpace

LEARNING_RATE = 0.1   # Adam's first step, in mutation ranges (a 4-bit weight scale: 0.1 x 5 % = 0.5 %), cosine to 0
BETAS = (0.9, 0.99)
CHECK_EVERY = 20      # steps between two measurements of the checking half
CHECK_EVERY_WHOLE_BATCHES = 10   # the same for whole-batch steps (step_images 0, the runs before it)
PATIENCE = 5          # checks without a better loss before the phase stops
AVERAGE = 0.9         # the checked point: an exponential average of Adam's points (~10 steps)


@dataclass(frozen=True)
class JointResult:
    """Where the joint phase ended: the best point's log-scale moves (None: nothing better than the
    start on the checking half) and how many steps it took."""
    moves: list[np.ndarray] | None
    steps: int
    start_check_loss: float
    best_check_loss: float


@dataclass(frozen=True)
class JointProgress:
    """The joint phase at a check, after ``step`` steps: all it needs to go on (numpy, for the
    checkpoint). ``coords``: Adam's point; ``exp_avg``/``exp_avg_sq``: Adam's moment estimates;
    ``average``: the checked point; ``best``: the best checked point (None: none beat the start);
    ``check_loss``: the checking half's loss at this check."""
    step: int
    coords: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    average: np.ndarray
    best: np.ndarray | None
    start_loss: float
    best_loss: float
    since_best: int
    check_loss: float


Batch = tuple[torch.Tensor, torch.Tensor]   # (images, the FP outputs the fitness compares them to)


def split_batches(calib: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> tuple[list[Batch], list[Batch]]:
    """(the stepping half, the checking half) of the calibration batches: alternate batches, or the
    two halves of the rows when there is one batch (of one image: that image in both)."""
    pairs = list(zip(calib, targets))
    if len(pairs) >= 2:
        return pairs[0::2], pairs[1::2]
    images, target = pairs[0]
    half = max(1, len(images) // 2)
    rest = slice(half, None) if len(images) > 1 else slice(None)
    return [(images[:half], target[:half])], [(images[rest], target[rest])]


def stepping_parts(stepping: Sequence[Batch], step_images: int) -> list[Batch]:
    """Each stepping batch as interleaved parts of at most ``step_images`` images (every k-th image from
    the i-th, so each part spans the batch), in order; 0: the batches whole."""
    if not step_images:
        return list(stepping)
    parts = []
    for images, target in stepping:
        count = -(-len(images) // step_images)
        parts += [(images[i::count], target[i::count]) for i in range(count)]
    return parts


def checking_batches(per_batch: torch.Tensor) -> slice:
    """The checking half among ``(candidates, batches)`` losses: the odd batches, as ``split_batches``
    splits them; with one batch, that batch (the rows of one batch are not told apart)."""
    return slice(1, None, 2) if per_batch.shape[1] >= 2 else slice(None)


def _forward(segments: Segments, spaces: Sequence[BlockSpace], scales: Sequence[torch.Tensor],
             images: torch.Tensor, pre_logits: bool) -> torch.Tensor:
    """The whole model with each block's searched scales replaced by ``scales`` (differentiable)."""
    x = segments.stem(images)
    for join, block, space, block_scales in zip(segments.joins, segments.blocks, spaces, scales):
        buffers = {name: value[0] for name, value in space.stacked_buffers(block_scales[None]).items()}
        x = functional_call(block, buffers, (join(x),))
    return segments.head(x, pre_logits)


def joint_phase(segments: Segments, spaces: Sequence[BlockSpace], starts: Sequence[np.ndarray],
                ranges: Sequence[np.ndarray], calib: Sequence[torch.Tensor], fitness: Fitness, max_steps: int,
                step_images: int, random_direction: Callable[[int], np.ndarray] | None = None,
                resume: JointProgress | None = None) -> Generator[JointProgress, None, JointResult]:
    """Adam over every block's log-scales (above). Yields its JointProgress after every check and returns
    a JointResult. ``step_images``: the images of one step (0: a whole batch). ``random_direction(n)``:
    the null's stand-in for each gradient. ``resume``: a progress it yielded, to go on from (the same
    ``starts``, images and, for the null, the random generator's state at that check)."""
    device = calib[0].device
    stepping, checking = split_batches(calib, fitness.targets)
    stepping = stepping_parts(stepping, step_images)
    check_every = CHECK_EVERY if step_images else CHECK_EVERY_WHOLE_BATCHES
    base = [torch.from_numpy(np.ascontiguousarray(s, np.float32)).to(device) for s in starts]
    unit = [torch.from_numpy(np.ascontiguousarray(r, np.float32)).to(device) for r in ranges]
    sizes = [s.numel() for s in base]
    u = torch.zeros(sum(sizes), device=device, requires_grad=True)
    optimizer = torch.optim.Adam([u], lr=LEARNING_RATE, betas=BETAS)

    def scales_at(coords: torch.Tensor) -> list[torch.Tensor]:
        return [b * torch.exp(r * part) for b, r, part in zip(base, unit, torch.split(coords, sizes))]

    @torch.no_grad()
    def check_loss(coords: torch.Tensor) -> float:
        scales = scales_at(coords)
        losses = [fitness.loss_fn(_forward(segments, spaces, scales, images, fitness.pre_logits), target,
                                  fitness.temperature) for images, target in checking]
        return float(np.mean([float(loss) for loss in losses]))

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(values, np.float32)).to(device)

    if resume is None:
        start_loss = best_loss = check_loss(u.detach())
        average, best, since_best, first = u.detach().clone(), None, 0, 1
    else:
        with torch.no_grad():
            u.copy_(tensor(resume.coords))
        optimizer.state[u] = {"step": torch.tensor(float(resume.step)), "exp_avg": tensor(resume.exp_avg),
                              "exp_avg_sq": tensor(resume.exp_avg_sq)}
        start_loss, best_loss, since_best, first = resume.start_loss, resume.best_loss, resume.since_best, resume.step + 1
        average, best = tensor(resume.average), None if resume.best is None else tensor(resume.best)
    step, last = first - 1, max_steps if since_best < PATIENCE else first - 1   # a finished phase takes no step
    for step in range(first, last + 1):
        images, target = stepping[(step - 1) % len(stepping)]
        optimizer.zero_grad(set_to_none=True)
        optimizer.param_groups[0]["lr"] = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * (step - 1) / max_steps))
        if random_direction is None:
            with torch.enable_grad():   # whatever the caller's mode (the memory bench runs without gradients)
                loss = fitness.loss_fn(_forward(segments, spaces, scales_at(u), images, fitness.pre_logits), target,
                                       fitness.temperature)
                u.grad = torch.autograd.grad(loss, u)[0]
        else:
            u.grad = torch.from_numpy(random_direction(u.numel()).astype(np.float32)).to(device)
        optimizer.step()
        average.mul_(AVERAGE).add_(u.detach(), alpha=1 - AVERAGE)
        if step % check_every:
            continue
        loss_now = check_loss(average)
        if loss_now < best_loss:
            best_loss, best, since_best = loss_now, average.clone(), 0
        else:
            since_best += 1
        moments = optimizer.state[u]
        yield JointProgress(step, u.detach().cpu().numpy().copy(), moments["exp_avg"].cpu().numpy().copy(),
                            moments["exp_avg_sq"].cpu().numpy().copy(), average.cpu().numpy().copy(),
                            None if best is None else best.cpu().numpy().copy(), start_loss, best_loss, since_best,
                            loss_now)
        if since_best >= PATIENCE:
            break
    moves = None if best is None else [(r * part).cpu().numpy() for r, part in zip(unit, torch.split(best, sizes))]
    return JointResult(moves, step, start_loss, best_loss)


def moved(starts: Sequence[np.ndarray], moves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every block's scales after the joint phase's log-scale ``moves``."""
    return [(np.asarray(s, np.float64) * np.exp(np.asarray(m, np.float64))).astype(np.float32)
            for s, m in zip(starts, moves)]

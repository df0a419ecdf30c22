"""Train a built-in model from scratch (``python -m engine train-demo [--arch NAME] --out PATH``).

One recipe for every architecture in DEMO_ARCHS (``digits-vit``, ``digits-swin``): it writes the weights
(resources/digits_vit.safetensors, resources/digits_swin.safetensors) and, beside them, a .json of the
settings, the accuracies and the training time (docs/results.md, "The built-in demo" and "The second
built-in model"): deterministic for a given seed, on one CPU core. The architectures differ only in
their initialisation. A ViT learns slowly from 1,097 tiny images, so two initialisations give
it the locality a CNN has for free: 2-D sine-cosine position embeddings and mimetic attention weights
(nearby patches attend to each other at step 0). Swin has that locality by construction (windows,
relative position bias, patch merging) and keeps timm's initialisation.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from .atomic import atomic_path, write_text
from .data import DIGITS, digits_images, digits_split_indices, iterate, load_splits
from .models import BUILTIN_MODELS, DEMO_MODEL, DIGITS_SWIN, create_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Optimisation and augmentation settings (stored in the JSON sidecar next to the weights)."""
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    max_shift_px: float = 1.5      # random translation, pixels at 16x16
    max_rotate_deg: float = 5.0
    scale_range: float = 0.05      # zoom in [1 - r, 1 + r]
    noise: float = 0.03            # like the test copies' noise


@dataclass(frozen=True)
class DemoArch:
    """What differs between the built-in architectures' training: the initialisation on top of timm's
    (in place, from the run's generator)."""
    init: Callable[[nn.Module, torch.Generator], None]
    init_description: str


def vit_init(model: nn.Module, generator: torch.Generator) -> None:
    """Locality for a plain ViT: 2-D sine-cosine position embedding and mimetic attention."""
    sincos_pos_init(model)
    mimetic_init(model, generator)


def timm_init(model: nn.Module, generator: torch.Generator) -> None:
    """timm's own initialisation, kept as is."""


DEMO_ARCHS = {
    DEMO_MODEL: DemoArch(vit_init, "timm default + 2-D sin-cos position embedding + mimetic attention"),
    DIGITS_SWIN: DemoArch(timm_init, "timm default"),
}


def train_demo(out: str | Path, seed: int = 0, epochs: int = 40, log: logging.Logger = logger,
               config: DemoConfig = DemoConfig(), arch: str = DEMO_MODEL) -> dict[str, Any]:
    """Train the built-in ``arch`` on the digits train split; write ``out`` (.safetensors) and its .json
    atomically (40 epochs: the shipped weights' count).

    Runs on one CPU thread so the result does not depend on the number of cores. Global torch
    state (RNG, thread count, deterministic-algorithms flag) is restored afterwards.
    """
    out = Path(out)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, train_seconds, cpu_seconds = _train(arch, seed, epochs, config, log)
        _save_atomic(model, out, arch)
        loaded, info = create_model(arch, weights=out)
        splits = load_splits(None, info)
        heldout_top1, test_top1 = top1(loaded, splits.heldout), top1(loaded, splits.test)
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)

    result = {"model": arch, "architecture": dict(BUILTIN_MODELS[arch].arch), "dataset": DIGITS, "seed": seed,
              "epochs": epochs, "train_seconds": round(train_seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2),
              "threads": 1, "n_train": len(digits_split_indices()["train"]), "n_heldout": len(splits.heldout),
              "n_test": len(splits.test), "heldout_top1": heldout_top1, "test_top1": test_top1,
              "weights_sha256": info.weights_sha256, "config": asdict(config),
              "init": DEMO_ARCHS[arch].init_description,
              "torch_version": torch.__version__, "timm_version": timm.__version__}
    write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    log.info("%s: test top-1 %.4f, held-out top-1 %.4f, trained in %.1f s", arch, result["test_top1"],
             result["heldout_top1"], train_seconds)
    return result


def _train(arch: str, seed: int, epochs: int, config: DemoConfig,
           log: logging.Logger) -> tuple[nn.Module, float, float]:
    generator = torch.Generator().manual_seed(seed)
    model = BUILTIN_MODELS[arch].build(10)
    DEMO_ARCHS[arch].init(model, generator)
    images, labels = digits_images()
    train = torch.as_tensor(digits_split_indices()["train"])
    train_images, train_labels = images[train], labels[train]
    mean, std = model.pretrained_cfg["mean"][0], model.pretrained_cfg["std"][0]

    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total, warmup = epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total))
    log.info("training %s: %d images, %d epochs", arch, len(train), epochs)
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        loss_sum = 0.0
        for batch in torch.randperm(len(train), generator=generator).split(config.batch_size):
            x = (augment(train_images[batch], config, generator) - mean) / std
            loss = F.cross_entropy(model(x), train_labels[batch], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(batch)
        log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, loss_sum / len(train))
    return model.eval(), time.perf_counter() - start, time.process_time() - cpu_start


def augment(images: Tensor, config: DemoConfig, generator: torch.Generator) -> Tensor:
    """Random small affine warps plus noise (images in [0, 1]), a superset of the test copies' shifts."""
    n = len(images)
    u = torch.rand(4, n, generator=generator) * 2 - 1
    angle = u[0] * math.radians(config.max_rotate_deg)
    scale = 1 + u[1] * config.scale_range
    pixel = 2.0 / images.shape[-1]  # one pixel in affine_grid's [-1, 1] coordinates
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / scale, -torch.sin(angle) / scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / scale, torch.cos(angle) / scale
    theta[:, :, 2] = u[2:].T * config.max_shift_px * pixel
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (warped + config.noise * torch.randn(warped.shape, generator=generator)).clamp(0, 1)


@torch.no_grad()
def sincos_pos_init(model: nn.Module) -> None:
    """2-D sine-cosine position embedding (as in MAE) for the patch tokens; the class token's is zero."""
    rows, cols = model.patch_embed.grid_size
    quarter = model.embed_dim // 4
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                            indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        angles = coord[:, None] * omega[None]
        parts += [angles.sin(), angles.cos()]
    model.pos_embed[0, model.num_prefix_tokens:] = torch.cat(parts, dim=1)
    model.pos_embed[0, :model.num_prefix_tokens] = 0


@torch.no_grad()
def mimetic_init(model: nn.Module, generator: torch.Generator, a1: float = 0.7, b1: float = 0.7,
                 a2: float = 0.4, b2: float = 0.4) -> None:
    """Mimetic initialisation (Trockman & Kolter, 2023): per head Wq^T Wk ~ a1 Z + b1 I, Wv^T Wproj^T ~ a2 Z - b2 I."""
    for block in model.blocks:
        attn = block.attn
        d = attn.qkv.in_features
        k = d // attn.num_heads
        weight = attn.qkv.weight  # rows: q, k, v
        eye = torch.eye(d)
        for h in range(attn.num_heads):
            wq_t, wk = _factor_pair(a1 * torch.randn(d, d, generator=generator) / math.sqrt(d) + b1 * eye, k)
            weight[h * k:(h + 1) * k] = wq_t.T
            weight[d + h * k:d + (h + 1) * k] = wk
        wv_t, wproj_t = _factor_pair(a2 * torch.randn(d, d, generator=generator) / math.sqrt(d) - b2 * eye, d)
        weight[2 * d:] = wv_t.T
        attn.proj.weight.copy_(wproj_t.T)


def _factor_pair(target: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """A (d x rank), B (rank x d) with A @ B the best rank-``rank`` approximation of ``target``."""
    u, s, vh = torch.linalg.svd(target)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


@torch.no_grad()
def top1(model: nn.Module, dataset: Any) -> float:
    """Fraction of correct argmax predictions over ``dataset`` (read with ``data.iterate``)."""
    model.eval()
    correct = total = 0
    for images, labels in iterate(dataset, batch_size=500):
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save_atomic(model: nn.Module, out: Path, arch: str) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model": arch})

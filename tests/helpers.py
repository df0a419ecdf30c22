"""Builders that several test files share: image folders and weight files (instead of downloads), tiny
models and searches, the demo's cut-down sweep search. Test files import from here, never from each
other (a test module imported by another is collected under two names and its fixtures leak)."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import Attention, PatchEmbed
from timm.models.swin_transformer import WindowAttention
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import Dataset

from engine.data import Splits, TensorImages
from engine.models import DEMO_WEIGHTS, ModelInfo
from engine.pipeline import Prepared, RunSpec, prepare
from engine.plan.file import BitPlan
from engine.quant import QuantConfig, quantize
from engine.search import run as search_run
from engine.search.checkpoint import load_checkpoint
from engine.search.config import PRESETS, SearchConfig
from engine.search.events import BlockDone, Evaluated, Finished, Started
from engine.search.space import BlockSpace
from engine.data.synthetic import synthetic_splits, write_image_folder


def make_image_folder(root: str | Path, n_classes: int = 3, per_class: int = 4, size: int = 32,
                      corrupt: int = 0) -> Path:
    """``engine.data.synthetic.write_image_folder`` (class_<i> folders, PNG and JPEG, seed 0), plus ``corrupt``
    extra unreadable ``.JPEG`` files (random bytes) in class_0 of train and of val. Returns ``root``.
    """
    root = write_image_folder(root, n_classes, per_class, size)
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for k in range(corrupt):
            (root / part / "class_0" / f"broken_{k}.JPEG").write_bytes(rng.bytes(256))
    return root


def save_random_timm_model(name: str, path: str | Path, num_classes: int) -> Path:
    """A seeded random-init timm model's state dict, as .safetensors (or a torch file for .pth/.pt)."""
    path = Path(path)
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


# Run files as earlier builds wrote them: what each layout lacked (search fields, the RunSpec, provenance).
OLDER_LAYOUTS = {
    "no spec": dict(search_fields=("vector", "budget", "direction"), spec=False),
    "no vector/budget": dict(search_fields=("vector", "budget", "direction"), spec=True),
    "no direction": dict(search_fields=("direction",), spec=True),
}


def as_older_layout(path: str | Path, layout: str) -> Path:
    """Rewrite a run file in place as an earlier build wrote it (``OLDER_LAYOUTS``)."""
    import json

    import h5py

    drop = OLDER_LAYOUTS[layout]
    with h5py.File(path, "r+") as f:
        search = json.loads(f["config"].attrs["search"])
        f["config"].attrs["search"] = json.dumps({k: v for k, v in search.items() if k not in drop["search_fields"]})
        if not drop["spec"]:
            del f["config"].attrs["run_spec"]
        if "provenance" in f:
            del f["provenance"]
    return Path(path)


def with_schema_version(path: str | Path, version: int) -> Path:
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = version
    return Path(path)


def other_demo_weights(path: Path) -> Path:
    """The demo's weights with one bias nudged: the same architecture, another weights hash."""
    state = load_file(str(DEMO_WEIGHTS))
    state["head.bias"] = state["head.bias"] + 0.01
    save_file(state, str(path))
    return path


# ---------------------------------------------------------------------- tiny models

def tiny_vit(depth: int = 3) -> VisionTransformer:
    """The search tests' seeded random ViT: 16×16 single-channel images, 10 classes, MLP ratio 2."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=depth,
                             num_heads=2, mlp_ratio=2.0).eval()


def tiny_quant_vit(depth: int = 2) -> VisionTransformer:
    """The quantization tests' seeded random ViT: as ``tiny_vit`` with timm's MLP ratio and two blocks."""
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=depth, num_heads=2,
                             num_classes=10).eval()


def calib_batches(n_batches: int = 3, size: int = 16, shape=(1, 16, 16)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn((size, *shape), generator=g) for _ in range(n_batches)]


def expected_points(model: nn.Module) -> dict[str, int]:
    """How many quantization points of each role a model has: every point must be quantized."""
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    attentions = sum(isinstance(m, (Attention, WindowAttention)) for m in model.modules())
    patch = sum(isinstance(m, PatchEmbed) for m in model.modules())
    return {"weight": linears + patch, "input": linears, "q": attentions, "k": attentions, "v": attentions,
            "probs": attentions}


# ---------------------------------------------------------------------- tiny searches (no demo, no files)

TINY_SEARCH = replace(PRESETS["default"], passes=1, cycles=2, children=3, population=6, tournament=3, joint_steps=0)
TINY_BATCH = 32


class SpyImages(Dataset):
    """A dataset that remembers whether anything read it, and how many items were read (like decodes)."""

    def __init__(self, inner: TensorImages) -> None:
        self.inner, self.reads, self.items_read = inner, 0, 0

    def __len__(self) -> int:
        self.reads += 1
        return len(self.inner)

    def __getitem__(self, index: int):
        self.reads += 1
        self.items_read += 1
        return self.inner[index]


def tiny_prepared(seed: int = 0, spy: bool = False) -> Prepared:
    """A random 3-block ViT at W3A4 whose labels are its own FP predictions (FP top-1 = 100 %)."""
    model = tiny_vit()

    def images(n: int, offset: int) -> TensorImages:
        x = torch.randn((n, 1, 16, 16), generator=torch.Generator().manual_seed(offset))
        with torch.no_grad():
            return TensorImages(x, model(x).argmax(-1), torch.arange(n))

    calib, heldout, test = images(96, 1), images(64, 2), images(64, 3)
    splits = Splits("synthetic", calib, SpyImages(heldout) if spy else heldout, SpyImages(test) if spy else test,
                    (1, 16, 16), (0.0,), (1.0,), 64, 64, tuple(str(c) for c in range(10)))
    spec = RunSpec(model="tiny-vit", quant=QuantConfig("percentile", 3, 4), calib_size=96, batch_size=TINY_BATCH,
                   seed=seed, device="cpu")
    batches = [calib.images[i:i + TINY_BATCH] for i in range(0, 96, TINY_BATCH)]
    info = ModelInfo("tiny-vit", "random-init", "0" * 64, (1, 16, 16), (0.0,), (1.0,), 10)
    return Prepared(spec, info, splits, torch.device("cpu"), quantize(model, spec.quant, batches), batches, 0.0)


def run_all(prepared: Prepared, config: SearchConfig, **kwargs) -> list:
    return list(search_run.search_prepared(prepared, config, **kwargs))


def final(events) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def scales_of(events) -> list[np.ndarray]:
    return [p.scale for _, _, p in final(events).run.scales.points()]


def block_space_of(shapes: list[tuple[int, ...]]) -> BlockSpace:
    """A block's search space with one point per shape (the first point's elements flagged)."""
    sizes = [max(1, int(np.prod(s))) for s in shapes]
    flags = np.concatenate([np.full(n, i == 0) for i, n in enumerate(sizes)])
    return BlockSpace("b", tuple(("b", str(i)) for i in range(len(shapes))), tuple(f"p{i}" for i in range(len(shapes))),
                      tuple(shapes), flags)


def assert_resumed_mid_pass_equals_uninterrupted(config: SearchConfig, tmp_path: Path) -> None:
    """Stop a 2-pass search inside its 5th block step (the 2nd of pass 2), resume from the
    checkpoint of step 4: the same scales and loss history as the uninterrupted run."""
    config = replace(config, passes=2)
    uninterrupted = run_all(tiny_prepared(), config)
    checkpoint = tmp_path / "run.ckpt"
    events = search_run.search_prepared(tiny_prepared(), config, checkpoint=checkpoint)
    for event in events:
        if isinstance(event, Evaluated) and event.evaluation > 4 * config.children * config.cycles + 2:
            events.close()
    assert load_checkpoint(checkpoint).state.step == 4
    resumed = run_all(tiny_prepared(), config, checkpoint=checkpoint, resume=checkpoint)
    assert next(e for e in resumed if isinstance(e, Started)).resumed_from_step == 4
    assert all(np.array_equal(x, y) for x, y in zip(scales_of(resumed), scales_of(uninterrupted)))
    np.testing.assert_array_equal(final(resumed).run.history.loss, final(uninterrupted).run.history.loss)


# ---------------------------------------------------------------------- a model without a classifier

HEADLESS_MODEL = "vit_small_patch14_reg4_dinov2"
HEADLESS_SIZE = 28   # 2x2 patches of 14 px, 4 registers and the class token: 9 tokens


def tiny_headless() -> tuple[torch.nn.Module, ModelInfo]:
    """A random-init DINOv2-with-registers backbone (no head), two narrow blocks: fast on a CPU."""
    torch.manual_seed(0)
    model = timm.create_model(HEADLESS_MODEL, pretrained=False, num_classes=0, img_size=HEADLESS_SIZE, depth=2,
                              embed_dim=32, num_heads=2).eval()
    shape = (3, HEADLESS_SIZE, HEADLESS_SIZE)
    info = ModelInfo(HEADLESS_MODEL, "random-init", "0" * 64, shape, (0.5,) * 3, (0.25,) * 3, 0)
    return model, info


def headless_prepared() -> Prepared:
    """``tiny_headless`` quantized (the default QuantConfig) on four synthetic images (no labels to draw)."""
    model, info = tiny_headless()
    splits = synthetic_splits(info, calib_size=4, seed=0, heldout_size=4)   # labels: none to draw
    spec = RunSpec(model=HEADLESS_MODEL, quant=QuantConfig(), calib_size=4, batch_size=4, device="cpu",
                   compile="off")
    calib = [splits.calibration.images]
    return Prepared(spec, info, splits, torch.device("cpu"), quantize(model, spec.quant, calib), calib, 0.0)


def one_pass() -> SearchConfig:
    """The default search cut to one pass of one cycle of two children, without the joint phase."""
    return replace(PRESETS["default"], passes=1, cycles=1, children=2, joint_steps=0)


# ---------------------------------------------------------------------- the demo's cut-down sweep search
# Ray workers import this module (the tests folder is on their PYTHONPATH): ``small_search`` and
# ``faulty_cells`` reach them pickled by name.

SWEEP_TINY = SearchConfig(passes=1, cycles=1, children=2, population=4, tournament=2, joint_steps=0)
SWEEP_TINY_FLAGS = ["--passes", "1", "--cycles", "1", "--children", "2", "--population", "4", "--tournament", "2",
                    "--joint-steps", "0"]
SWEEP_BASE = RunSpec(calib_size=50, batch_size=50)
W8, W4 = "digits-vit_minmax_W8A8_s0", "digits-vit_minmax_W4A8_s0"     # the minmax W8A8/W4A8 grid's run file stems
# A bit plan for the sweep's plan axis: W8A8 but for the last block's qkv weights (4 bits) and probabilities (6)
SWEEP_PLAN = BitPlan("digits-vit", "minmax", 8, 8, (("blocks.5.attn.qkv/weight", 4), ("blocks.5.attn/probs", 6)))


def _head(dataset: TensorImages, n: int) -> TensorImages:
    return TensorImages(dataset.images[:n], dataset.labels[:n], dataset.originals[:n])


def small_search(spec, config, checkpoint=None, resume=None):
    """run_search on the demo with its held-out and test splits cut to their first 50 and 100 images."""
    prepared = prepare(spec)
    splits = replace(prepared.splits, heldout=_head(prepared.splits.heldout, 50), test=_head(prepared.splits.test, 100))
    yield from search_run.search_prepared(replace(prepared, splits=splits), config, checkpoint, resume)


def first_stop(events, stop):
    """Consume a sweep until ``stop(event)`` is true, then close it as the app's Stop does."""
    seen = []
    for event in events:
        seen.append(event)
        if stop(event):
            break
    events.close()
    return seen


STALL_S = 60    # how long a stalled cell waits to be killed before it fails the test


def faulty_cells(stalled: Path, missing: Path, spec: RunSpec, config, checkpoint=None, resume=None,
                 meet: Path | None = None):
    """small_search, with two faults by bit-width. W8A8: its first attempt stalls after its first
    block step (marked by the file ``stalled``) until the test kills its worker; not killed, it fails.
    W2A3: its data folder does not exist (a user error). ``meet``: a folder where the runs that search
    wait for each other before they start, so two of them overlap whatever Ray's worker pool holds."""
    if spec.quant.w_bits == 2:
        spec = replace(spec, data=str(missing))
    elif meet is not None:
        (meet / f"started-{spec.quant.bits_label}").write_text(str(os.getpid()))
        deadline = time.monotonic() + STALL_S
        while len(list(meet.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    for event in small_search(spec, config, checkpoint, resume):
        stall = spec.quant.w_bits == 8 and isinstance(event, BlockDone) and not stalled.exists()
        if stall:
            stalled.write_text(str(os.getpid()))   # before the event goes out: the retry must not stall
        yield event
        if stall:
            time.sleep(STALL_S)                     # the worker under test hangs; the test kills it meanwhile
            raise RuntimeError("the test did not kill this worker")

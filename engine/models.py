"""Models: timm ViT/DeiT/Swin by name and the built-in offline models trained on the digits (DESIGN §6):
``digits-vit`` (the demo) and ``digits-swin`` (a second family, so no claim rests on one toy).

Every failure a user can cause (unknown name, bad weights file, wrong architecture, no network
for ``--pretrained``) is a ModelLoadError whose message names the problem, never a traceback.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import timm
import torch
from safetensors.torch import load_file
from timm.data import resolve_data_config
from timm.models import SwinTransformer, VisionTransformer
from torch import nn

DEMO_MODEL = "digits-vit"
DIGITS_SWIN = "digits-swin"
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEMO_WEIGHTS = RESOURCES / "digits_vit.safetensors"
# Statistics of the 16x16 digits in [0, 1] (train split); part of the built-in models' definition.
DIGITS_MEAN, DIGITS_STD = (0.305,), (0.319,)
DIGITS_ARCH = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=96, depth=6, num_heads=4, mlp_ratio=2.0,
                   class_token=True, global_pool="token")
# 8x8 tokens in windows of 4 (shifted in the second block), merged twice: 4x4, then 2x2 (one window each).
DIGITS_SWIN_ARCH = dict(img_size=16, patch_size=2, in_chans=1, embed_dim=48, depths=(2, 2, 2), num_heads=(2, 4, 8),
                        window_size=4, mlp_ratio=2.0)
_PROBE_TIMEOUT_S = 3.0

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A model could not be built or its weights could not be loaded; the message says why."""


class WeightsFileError(ModelLoadError):
    """A local weights file is missing, unreadable, or not a state dict of this architecture."""


class WeightsDownloadError(ModelLoadError):
    """timm's pretrained weights could not be had (none exist, or no network)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str             # builtin:..., file:/abs/path, timm-pretrained, random-init
    weights_sha256: str     # of the weights file, else of the state dict's bytes
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    interpolation: str = "bicubic"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class BuiltinModel:
    """A timm architecture trained on the built-in digits, whose weights ship in resources/ (works offline)."""
    name: str
    family: type[nn.Module]     # the timm class, built with ``arch``
    arch: dict
    classifier: str             # the head's state-dict prefix, where a weights file's class count is read
    weights: Path
    note: str                   # a word for pickers: "digits-vit  (built-in demo)"

    def build(self, num_classes: int = 10) -> nn.Module:
        """The architecture, randomly initialised, with the digits' data config attached for timm."""
        model = self.family(num_classes=num_classes, **self.arch)
        model.pretrained_cfg = dict(input_size=(1, 16, 16), mean=DIGITS_MEAN, std=DIGITS_STD, interpolation="bilinear",
                                    crop_pct=1.0, crop_mode="center", num_classes=num_classes,
                                    classifier=self.classifier)
        return model


BUILTIN_MODELS = {m.name: m for m in (
    BuiltinModel(DEMO_MODEL, VisionTransformer, DIGITS_ARCH, "head", DEMO_WEIGHTS, "demo"),
    # windowed attention, relative position bias, patch merging: another family than the demo's
    BuiltinModel(DIGITS_SWIN, SwinTransformer, DIGITS_SWIN_ARCH, "head.fc", RESOURCES / "digits_swin.safetensors",
                 "Swin"),
)}


def build_digits_vit(num_classes: int = 10) -> nn.Module:
    """The demo architecture, randomly initialised."""
    return BUILTIN_MODELS[DEMO_MODEL].build(num_classes)


def create_model(name: str = DEMO_MODEL, weights: str | Path | None = None, pretrained: bool = False,
                 num_classes: int | None = None) -> tuple[nn.Module, ModelInfo]:
    """Build ``name`` in eval mode on the CPU, with weights from ``weights``, timm's hub or random init.

    A built-in model (BUILTIN_MODELS) loads its shipped weights unless ``weights`` is given (``pretrained`` is
    implied). For timm models with ``weights`` and no ``num_classes``, the class count comes from the file's head.
    """
    if weights is not None and pretrained:
        raise ModelLoadError("give either pretrained weights or a weights file, not both")
    builtin = BUILTIN_MODELS.get(name)
    if builtin is not None:
        path = Path(weights) if weights is not None else builtin.weights
        state = _read_state_dict(path)
        model = builtin.build(num_classes or _head_classes(state, builtin.classifier) or 10)
        _load_into(model, state, path)
        source = f"file:{path.resolve()}" if weights is not None else f"builtin:resources/{builtin.weights.name}"
        return _finish(model, name, source, file_sha256(path))

    _check_timm_name(name)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if pretrained:
        model = _create_pretrained(name, kwargs)
        return _finish(model, name, "timm-pretrained", _state_sha256(model))
    if weights is None:
        model = _create_timm(name, kwargs)
        return _finish(model, name, "random-init", _state_sha256(model))
    path = Path(weights)
    state = _read_state_dict(path)
    if num_classes is None:
        classifier = timm.models.get_pretrained_cfg_value(name, "classifier") or "head"
        if not isinstance(classifier, str):
            classifier = classifier[0]  # distilled models name (head, head_dist)
        inferred = _head_classes(state, classifier)
        if inferred is not None:
            kwargs["num_classes"] = inferred
    model = _create_timm(name, kwargs)
    _load_into(model, _adapt_keys(model, state), path)
    return _finish(model, name, f"file:{path.resolve()}", file_sha256(path))


def _finish(model: nn.Module, name: str, source: str, sha256: str) -> tuple[nn.Module, ModelInfo]:
    model = model.eval().cpu()
    cfg = resolve_data_config({}, model=model)
    info = ModelInfo(name=name, source=source, weights_sha256=sha256, input_size=tuple(cfg["input_size"]),
                     mean=tuple(float(m) for m in cfg["mean"]), std=tuple(float(s) for s in cfg["std"]),
                     num_classes=int(getattr(model, "num_classes", 0)), interpolation=cfg["interpolation"],
                     crop_pct=float(cfg["crop_pct"]))
    return model, info


def _check_timm_name(name: str) -> None:
    if timm.is_model(name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.6)
    by_prefix: dict[str, list[str]] = {}  # a short or mistyped name matches the start of full names
    for candidate in names:
        by_prefix.setdefault(candidate[: len(name)], []).append(candidate)
    for prefix in difflib.get_close_matches(name, list(by_prefix), n=3, cutoff=0.7):
        close += [n for n in by_prefix[prefix] if n not in close]
    hint = f"; close matches: {', '.join(close[:8])}" if close else ""
    builtins = " or ".join(repr(n) for n in BUILTIN_MODELS)
    raise ModelLoadError(f"unknown model {name!r} (neither {builtins} nor a timm model name){hint}")


RANDOM_INIT_SEED = 0


def _create_timm(name: str, kwargs: dict) -> nn.Module:
    """Seeded (torch's global RNG left as it was), so a random-init model is the same in every process:
    its weights hash then identifies it, and its runs can be resumed, skipped, compared and evaluated."""
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:  # timm raises many types for bad arguments
        raise ModelLoadError(f"could not build {name}: {exc}") from exc


def _create_pretrained(name: str, kwargs: dict) -> nn.Module:
    """timm's own download; offline, only the local cache is tried so it fails in seconds, not minutes."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):  # timm would silently use random init
        raise WeightsDownloadError(f"timm has no pretrained weights for {name}: use --weights FILE")
    try:
        with _hub_offline_unless_reachable():
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:
        raise WeightsDownloadError(f"could not download pretrained weights for {name}: no network? use --weights FILE "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


@contextmanager
def _hub_offline_unless_reachable() -> Iterator[None]:
    """huggingface_hub retries an unreachable host for ~50 s; probe it once and go offline if it fails."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S).close()
        reachable = True
    except OSError:
        reachable = False
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or not reachable
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (plain, or under "state_dict"/"model")."""
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files raise anything from pickle, zip or safetensors
        raise WeightsFileError(f"could not read weights file {path} (corrupt or not a weights file): {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _head_classes(state: dict[str, torch.Tensor], classifier: str) -> int | None:
    weight = state.get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _key_problem(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """The first mismatch between ``state`` and the model's own state dict, in words."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing:
        return f"missing key {missing[0]!r} ({len(missing)} missing in all)"
    if unexpected:
        return f"unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all)"
    if resized:
        k = resized[0]
        return f"key {k!r} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}"
    return None


def _adapt_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Use timm's checkpoint filter (e.g. original Swin/DeiT releases) only when the keys do not fit as is."""
    if _key_problem(model, state) is None:
        return state
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        adapted = filter_fn(dict(state), model)
    except Exception:  # the filter cannot convert it: report the original mismatch
        return state
    if _key_problem(model, adapted) is not None:
        return state
    _warn_resampled(state, adapted)
    return adapted


def _warn_resampled(state: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor]) -> None:
    """Name every tensor timm's filter resampled (a patch or position embedding made for another patch
    size or resolution is interpolated): the model then runs weights it was not trained with."""
    for key, tensor in adapted.items():
        if key in state and state[key].numel() != tensor.numel():  # a mere reshape keeps every value
            log.warning("weights: %s resampled from %s in the file to %s for the model (timm's checkpoint filter;"
                        " another patch size or resolution?)", key, tuple(state[key].shape), tuple(tensor.shape))


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    problem = _key_problem(model, state)
    if problem is not None:
        raise WeightsFileError(f"weights in {path} do not fit {type(model).__name__}: {problem}")
    model.load_state_dict(state, strict=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _state_sha256(model: nn.Module) -> str:
    """Identity of in-memory weights (no file): names, shapes and bytes of the state dict. Flattened first,
    so 0-dim tensors (a step counter, a scalar gain) of any element size can be viewed as bytes."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

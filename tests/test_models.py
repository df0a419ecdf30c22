"""engine.models, engine.device and engine.demo: the shipped demo model, timm models, clear load errors."""
from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm.models
import torch
from safetensors.torch import load_file, save_file
from timm.models import SwinTransformer, VisionTransformer

from engine.data import Splits, iterate
from engine.demo import train_demo
from engine.device import resolve_device
from engine.argtypes import vit_model
from engine.models import BUILTIN_MODELS, DEMO_MODEL, DEMO_WEIGHTS, DIGITS_SWIN, ModelLoadError, create_model
from helpers import save_random_timm_model


@torch.no_grad()
def _top1(model: torch.nn.Module, dataset) -> float:
    correct = total = 0
    for images, labels in iterate(dataset, batch_size=500):
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    return correct / total


def test_demo_model_is_a_small_timm_vit(demo_model) -> None:
    model, info = demo_model
    assert isinstance(model, VisionTransformer) and not model.training
    assert (model.patch_embed.patch_size, model.embed_dim, len(model.blocks)) == ((4, 4), 96, 6)
    assert model.global_pool == "token" and model.cls_token is not None
    assert (info.name, info.source, info.num_classes) == (DEMO_MODEL, "builtin:resources/digits_vit.safetensors", 10)
    assert info.input_size == (1, 16, 16) and len(info.mean) == len(info.std) == 1
    assert len(info.weights_sha256) == 64


def test_shipped_demo_model_accuracy(demo_model, digits_splits: Splits) -> None:
    model, info = demo_model
    accuracy = _top1(model, digits_splits.test)
    assert accuracy >= 0.97
    sidecar = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
    assert sidecar["weights_sha256"] == info.weights_sha256
    assert abs(sidecar["test_top1"] - accuracy) <= 0.002
    assert sidecar["n_test"] == len(digits_splits.test)


SWIN_SLICE = 500   # the 450 test originals and 50 of their shifted copies


def test_digits_swin_is_a_small_timm_swin_with_its_shipped_weights(digits_splits: Splits) -> None:
    """The second built-in model: trained weights whose hash the sidecar records, high top-1 on a slice of test."""
    model, info = create_model(DIGITS_SWIN)
    assert isinstance(model, SwinTransformer) and not model.training
    assert [len(stage.blocks) for stage in model.layers] == [2, 2, 2] and model.patch_embed.patch_size == (2, 2)
    assert (info.source, info.num_classes, info.input_size) == ("builtin:resources/digits_swin.safetensors", 10,
                                                                (1, 16, 16))
    sidecar = json.loads(BUILTIN_MODELS[DIGITS_SWIN].weights.with_suffix(".json").read_text())
    assert (sidecar["model"], sidecar["weights_sha256"]) == (DIGITS_SWIN, info.weights_sha256)
    assert sidecar["test_top1"] >= 0.97 and sidecar["threads"] == 1
    test = digits_splits.test
    with torch.no_grad():
        predicted = model(test.images[:SWIN_SLICE]).argmax(1)
    assert float((predicted == test.labels[:SWIN_SLICE]).float().mean()) >= 0.97
    assert vit_model(DIGITS_SWIN) == DIGITS_SWIN     # --model digits-swin in every command


def test_train_demo_short_run_writes_loadable_weights(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "digits.safetensors"
    result = train_demo(out, seed=0, epochs=1)
    assert {"test_top1", "heldout_top1", "train_seconds", "epochs"} <= result.keys()
    assert 0.0 <= result["test_top1"] <= 1.0 and result["epochs"] == 1
    model, info = create_model(weights=out)
    assert info.source == f"file:{out.resolve()}" and info.num_classes == 10
    assert json.loads(out.with_suffix(".json").read_text())["weights_sha256"] == info.weights_sha256
    assert not list(out.parent.glob("*.tmp"))


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ModelLoadError, match="unknown model 'deit_tiny_patch16'.*deit_tiny_patch16_224"):
        create_model("deit_tiny_patch16")


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="weights file not found.*nothing.safetensors"):
        create_model(weights=tmp_path / "nothing.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_corrupt_weights_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ModelLoadError, match="could not read weights file"):
        create_model(weights=path)


def test_weights_of_another_architecture_name_a_key(tmp_path: Path) -> None:
    resnet = save_random_timm_model("resnet10t", tmp_path / "resnet.safetensors", num_classes=10)
    with pytest.raises(ModelLoadError, match="missing key 'cls_token'"):
        create_model(DEMO_MODEL, weights=resnet)
    with pytest.raises(ModelLoadError, match="key 'head.weight' has shape"):
        create_model(DEMO_MODEL, weights=DEMO_WEIGHTS, num_classes=5)


def test_pretrained_without_network_fails_fast(monkeypatch, tmp_path: Path) -> None:
    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # no cached copy
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="could not download pretrained weights for deit_tiny_patch16_224.*"
                                             "use --weights FILE"):
        create_model("deit_tiny_patch16_224", pretrained=True)
    assert time.perf_counter() - start < 30
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_before  # restored for later online use


def test_pretrained_for_a_model_timm_has_no_weights_for(monkeypatch) -> None:
    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda name: None)
    with pytest.raises(ModelLoadError, match="no pretrained weights for deit_tiny_patch16_224"):
        create_model("deit_tiny_patch16_224", pretrained=True)


def test_pretrained_and_weights_together_are_refused() -> None:
    with pytest.raises(ModelLoadError, match="not both"):
        create_model("deit_tiny_patch16_224", weights=DEMO_WEIGHTS, pretrained=True)


def test_timm_weights_file_infers_num_classes(tmp_path: Path) -> None:
    path = save_random_timm_model("deit_tiny_patch16_224", tmp_path / "deit.safetensors", num_classes=7)
    model, info = create_model("deit_tiny_patch16_224", weights=path)
    assert info.num_classes == 7 and model.head.out_features == 7 and not model.training
    assert info.source == f"file:{path.resolve()}"
    assert (info.input_size, info.interpolation, info.crop_pct) == ((3, 224, 224), "bicubic", 0.9)
    saved = load_file(str(path))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())

    wrapped = tmp_path / "deit.pth"  # a training checkpoint: {"model": state dict}, DDP "module." prefixes
    torch.save({"model": {f"module.{k}": v for k, v in saved.items()}, "epoch": 3}, wrapped)
    _, wrapped_info = create_model("deit_tiny_patch16_224", weights=wrapped)
    assert wrapped_info.num_classes == 7


def test_random_init_timm_model_is_the_same_in_every_call() -> None:
    """Seeded, so its hash identifies it (runs on it resume and rebuild), without touching torch's RNG."""
    before = torch.random.get_rng_state()
    model, info = create_model("deit_tiny_patch16_224", num_classes=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert (info.source, info.num_classes) == ("random-init", 4) and len(info.weights_sha256) == 64
    again, again_info = create_model("deit_tiny_patch16_224", num_classes=4)
    assert again_info.weights_sha256 == info.weights_sha256
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected and resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_shipped_weights_are_plain_float32_tensors() -> None:
    state = load_file(str(DEMO_WEIGHTS))
    assert state["head.weight"].shape == (10, 96) and all(v.dtype == torch.float32 for v in state.values())


@pytest.mark.parametrize("arch,key,file_shape", [
    (dict(img_size=160), "pos_embed", (1, 101, 192)),                                # another resolution
    (dict(img_size=112, patch_size=8), "patch_embed.proj.weight", (192, 3, 8, 8)),  # another patch size
])
def test_resampled_embedding_is_a_warning_naming_both_shapes(tmp_path: Path, caplog, arch, key, file_shape) -> None:
    torch.manual_seed(0)
    source = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=10, **arch)
    path = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    with caplog.at_level(logging.WARNING, logger="engine.models"):
        model, _ = create_model("deit_tiny_patch16_224", weights=path)
    model_shape = tuple(model.state_dict()[key].shape)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and key in warnings[0]
    assert f"{file_shape} in the file to {model_shape} for the model" in warnings[0]


def test_weights_that_fit_load_without_a_resampling_warning(tmp_path: Path, caplog) -> None:
    path = save_random_timm_model("deit_tiny_patch16_224", tmp_path / "deit.safetensors", num_classes=10)
    with caplog.at_level(logging.WARNING, logger="engine.models"):
        create_model("deit_tiny_patch16_224", weights=path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

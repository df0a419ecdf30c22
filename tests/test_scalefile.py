"""Scale file v1: full round trip, bit-identical reload, and one clear error per bad input."""
import h5py
import numpy as np
import pytest
import torch

from engine.quant import QuantConfig, QuantizedModel, quantize
from engine.runrecord import History, RunRecord
from engine.scalefile import ScaleFileError, apply_run, load_run, save_run
from helpers import tiny_quant_vit

CONFIG = QuantConfig("omse", 3, 4, attn_bits=6)


@pytest.fixture(scope="module")
def calibrated():
    images = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return quantize(tiny_quant_vit(), CONFIG, [images]), images


def make_record(qmodel, base=None, history=None):
    return RunRecord(model_name="tiny-vit", model_source="random-init", weights_sha256="ab" * 32, quant=CONFIG,
                     calibration={"dataset": "random", "n_samples": 8, "seed": 0, "input_size": [1, 16, 16],
                                  "mean": [0.5], "std": [0.25]},
                     scales=qmodel.scale_set(), seed=3, base=base, search={"preset": "default", "passes": 2},
                     history=history, metrics={"fp_top1": 98.5, "base_top1": 90.0, "device": "cpu"})


def test_round_trip_is_bit_identical(tmp_path, calibrated):
    qmodel, images = calibrated
    history = History(loss=np.array([3.0, 2.5]), eval_pass=np.array([0, 0], np.int32),
                      eval_block=np.array([1, 1], np.int32), heldout_top1=np.array([91.0]),
                      step_loss=np.array([2.5]), block_index=np.array([1], np.int32), pass_index=np.array([0], np.int32))
    path = save_run(tmp_path / "run.h5", make_record(qmodel, base=qmodel.scale_set(), history=history))
    record = load_run(path)
    assert record.quant == CONFIG and record.seed == 3 and record.search == {"preset": "default", "passes": 2}
    assert record.calibration["mean"] == [0.5] and record.metrics["fp_top1"] == 98.5
    assert list(record.scales) == list(qmodel.scale_set())  # model order survives HDF5
    assert record.scales.equals(qmodel.scale_set()) and record.base.equals(qmodel.scale_set())
    np.testing.assert_array_equal(record.history.loss, history.loss)
    fresh = QuantizedModel(tiny_quant_vit(), record.quant)
    apply_run(record, fresh, "tiny-vit")
    with torch.no_grad():
        assert torch.equal(fresh(images), qmodel(images))


def test_file_is_plain_hdf5_with_onnx_vocabulary(tmp_path, calibrated):
    path = save_run(tmp_path / "run.h5", make_record(calibrated[0]))
    with h5py.File(path) as f:
        assert f.attrs["schema"] == "cptv-scales" and f.attrs["model_name"] == "tiny-vit"
        point = f["layers/blocks.0.attn.qkv/weight"]
        assert point["scale"].shape == (96,) and point.attrs["granularity"] == "per_channel"
        assert point.attrs["axis"] == 0 and point.attrs["bits"] == 3
        assert f["layers/blocks.0.attn/probs"].attrs["bits"] == 6
        assert f["config"].attrs["quantizer"] == "omse"


def test_write_is_atomic(tmp_path, calibrated, monkeypatch):
    path = save_run(tmp_path / "run.h5", make_record(calibrated[0]))
    before = path.read_bytes()
    broken = make_record(calibrated[0])
    broken.metrics = {"bad": object()}  # h5py cannot store it: the write fails midway
    with pytest.raises(TypeError):
        save_run(path, broken)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_another_model_is_refused(tmp_path, calibrated):
    record = load_run(save_run(tmp_path / "run.h5", make_record(calibrated[0])))
    with pytest.raises(ScaleFileError, match="for model 'tiny-vit', not 'deit_tiny_patch16_224'"):
        apply_run(record, QuantizedModel(tiny_quant_vit(), CONFIG), "deit_tiny_patch16_224")
    with pytest.raises(ScaleFileError, match="blocks.2"):
        apply_run(record, QuantizedModel(tiny_quant_vit(depth=3), CONFIG), "tiny-vit")


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.__delitem__("layers/blocks.1.mlp.fc2"), "no entry for blocks.1.mlp.fc2/weight"),
    (lambda f: (f.__delitem__("layers/head/weight/scale"),
                f["layers/head/weight"].create_dataset("scale", data=np.ones(7, np.float32))), "head/weight.*(scale has shape|scale shape)"),
    (lambda f: f["layers/head/input/scale"].__setitem__((), np.inf), "head/input: scale has non-finite"),
    (lambda f: f["layers/head/input/scale"].__setitem__((), -0.5), "head/input: scale has non-finite or non-positive"),
])
def test_bad_contents_name_the_point(tmp_path, calibrated, edit, message):
    path = _edit(save_run(tmp_path / "run.h5", make_record(calibrated[0])), edit)
    with pytest.raises(ScaleFileError, match=message):
        apply_run(load_run(path), QuantizedModel(tiny_quant_vit(), CONFIG), "tiny-vit")


def test_truncated_and_foreign_files(tmp_path, calibrated):
    path = save_run(tmp_path / "run.h5", make_record(calibrated[0]))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ScaleFileError, match="not a readable HDF5 file|damaged"):
        load_run(truncated)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ScaleFileError, match="not a readable HDF5 file"):
        load_run(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(ScaleFileError, match="not a CPT-V scale file"):
        load_run(other)
    with pytest.raises(FileNotFoundError, match="scale file not found"):
        load_run(tmp_path / "missing.h5")


def test_the_run_spec_round_trips_and_older_files_have_none(tmp_path, calibrated):
    """The RunSpec a run was made with (``/config`` attr ``run_spec``, JSON) is what the identity rule compares."""
    spec = {"model": "tiny-vit", "weights": None, "pretrained": False, "data": "/data/imagenet",
            "quant": {"quantizer": "omse", "w_bits": 3, "a_bits": 4, "attn_bits": 6}, "calib_size": 8,
            "batch_size": 4, "seed": 3}
    record = make_record(calibrated[0])
    record.spec = spec
    path = save_run(tmp_path / "run.h5", record)
    assert load_run(path).spec == spec
    with h5py.File(path, "r+") as f:
        del f["config"].attrs["run_spec"]
    assert load_run(path).spec is None

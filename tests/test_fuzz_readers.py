"""Fuzzed readers (issue 24, item 9): run files, checkpoints and diagnosis files truncated, with bytes
flipped, parts deleted or replaced by ones of the wrong shape, dtype or attribute type, and scales made
NaN, infinite, zero or negative. Each case is one error line naming the file (DamagedFile, NewerSchema
only where flipped bytes raised the schema version; CheckpointError for a checkpoint; ScaleFileError for a
diagnosis file that holds none), or the file loads what was saved, bit for bit. Never another exception,
a crash or a hang.

One limit of the HDF5 files as written is counted, not failed: they carry no checksums, so a flipped byte
inside a stored value (a scale, a history entry, a character of a text or a name, a data address) can load
as another valid value of the same type and shape. A checkpoint's zip has CRCs: its flips must all be caught.

The readers run in a child process with a time limit per case, so a crash or a hang inside HDF5 fails that
case instead of the session. The outcomes per reader are counted and printed at the end of the module.
"""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import re
from collections import Counter
from contextlib import nullcontext
from datetime import timedelta
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from timm.models.vision_transformer import VisionTransformer

from engine.diagnose.points import Point
from engine.diagnose.result import Diagnosis, PointTable, WhatIf
from engine.diagnose.store import load_diagnosis, save_diagnosis
from engine.quant import QuantConfig, ScaleSet, quantize
from engine.runrecord import History, RunRecord
from engine.scalefile import load_run, save_run
from engine.search.checkpoint import SearchState, load_checkpoint, save_checkpoint

TIME_LIMIT = 45.0          # seconds one read may take in the reader process before it counts as a hang
FIRST_READ_LIMIT = 180.0   # the reader process imports torch and timm first
MEMORY_HEADROOM = 1 << 30
# CPTV_FUZZ_EXAMPLES=300 for a longer hunt than the suite's (docs/file-format.md)
FUZZ = settings(max_examples=int(os.environ.get("CPTV_FUZZ_EXAMPLES", 30)), deadline=timedelta(seconds=60), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
READERS: dict[str, Callable[[Path], Any]] = {"run": load_run, "checkpoint": load_checkpoint,
                                              "diagnosis": load_diagnosis}
# the exception classes each reader's contract allows for a broken file (NewerSchema only after flips)
CONTRACT = {"run": ("DamagedFile",), "checkpoint": ("CheckpointError",), "diagnosis": ("DamagedFile", "ScaleFileError")}
VALUE_CHANGED = "loaded, a stored value changed (no checksum)"
# descriptive dicts whose keys are stored text too: a flip in a key's bytes renames it
FREE_FORM = {"calibration", "metrics", "provenance", "spec", "search", "fitness"}


# ---------------------------------------------------------------- the files fuzzed

def make_run(path: Path) -> Path:
    """An FQ-ViT search run of a 2-block ViT: uniform, log2 and PTF points (PTF ones carry an extra array),
    base and refined scales, a history, metrics, the spec and provenance: every part the reader reads."""
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                              num_heads=2, mlp_ratio=2.0).eval()
    images = torch.randn(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    qmodel = quantize(model, QuantConfig("fqvit", 4, 4), [images])
    base = qmodel.scale_set()
    refined = ScaleSet((name, {role: p.with_scale(p.scale * 1.5) for role, p in roles.items()})
                       for name, roles in base.items())
    history = History(loss=np.linspace(3.0, 2.0, 5), eval_pass=np.array([-1, 0, 0, 0, 0], np.int32),
                      eval_block=np.array([-1, 1, 1, 0, 0], np.int32), heldout_top1=np.array([60.0, 61.0]),
                      step_loss=np.array([2.5, 2.0]), block_index=np.array([1, 0], np.int32),
                      pass_index=np.array([0, 0], np.int32))
    return save_run(path, RunRecord(
        model_name="tiny-vit", model_source="random-init", weights_sha256="ab" * 32, quant=qmodel.config,
        calibration={"dataset": "random", "n_samples": 16, "seed": 0, "input_size": [1, 16, 16], "mean": [0.5],
                     "std": [0.25]},
        scales=refined, seed=3, base=base, search={"preset": "default", "passes": 1}, history=history,
        metrics={"fp_top1": 98.0, "base_top1": 90.0, "refined_top1": 91.0, "n_test": 400, "device": "cpu"},
        spec={"model": "tiny-vit", "seed": 3}, provenance={"torch": "2.5", "threads": 1}))


def make_checkpoint(path: Path) -> Path:
    """After 2 block steps of 2 blocks, the first step selected (best-loss), 5 evaluations recorded."""
    rng = np.random.default_rng(0)
    vectors = [rng.uniform(0.01, 1.0, n).astype(np.float32) for n in (40, 56)]
    state = SearchState(vectors=vectors, rng_state=rng.bit_generator.state, base_loss=2.0, heldout_fp_top1=98.0,
                        heldout_base_top1=90.0, current_loss=1.5, selected_step=1, selected_score=-1.7,
                        selected_vectors=[v * 1.1 for v in vectors], step=2, evaluations=5, seconds=3.5,
                        eval_loss=[2.0, 1.9, 1.7, 1.6, 1.5], eval_pass=[-1, 0, 0, 0, 0], eval_block=[-1, 1, 1, 0, 0],
                        step_heldout=[91.0, 90.5], step_loss=[1.7, 1.5], step_block=[1, 0], step_pass=[0, 0])
    spec = {"model": "digits-vit", "quant": {"quantizer": "minmax", "w_bits": 4, "a_bits": 4}, "seed": 0}
    config = {"preset": "default", "select": "best-loss", "passes": 1}
    identity = {"spec": spec, "config": config, "weights_sha256": "ab" * 32, "base_sha256": "cd" * 32}
    return save_checkpoint(path, state, identity, spec, config, {"torch": "2.5", "threads": 1})


def make_diagnosis(path: Path) -> Path:
    """Six points over 2 blocks, base and refined tables (one SQNR infinite) and a what-if."""
    points = (Point("patch_embed.proj", "weight", -1, "patch_embed.proj/weight"),
              *(Point(f"blocks.{i}.attn{owner}", role, i, kind) for i in range(2)
                for owner, role, kind in ((".qkv", "weight", "attn.qkv.weight"), ("", "probs", "attn.probs"))),
              Point("head", "input", 2, "head/input"))

    def table(name: str, shift: float) -> PointTable:
        return PointTable(name, np.array([30.0, np.inf, 12.5, 28.0, 11.0, 20.0]), np.linspace(0.1, 0.6, 6) + shift,
                          np.linspace(70, 75, 6), np.linspace(1.0, 1.5, 6) + shift, np.linspace(80, 85, 6),
                          1.2 + shift, 80.0 - shift)

    whatif = WhatIf(to_bits=8, ranked_by="refined", k=np.array([1, 2]), top1_top=np.array([85.0, 88.0]),
                    top1_random=np.array([[81.0, 82.0, 80.0], [84.0, 83.0, 85.0]]),
                    mean_act_bits_top=np.array([4.5, 5.0]), mean_act_bits_random=np.array([4.5, 5.0]),
                    ranking=np.array([4, 2, 0]), top1_none=80.0)
    return save_diagnosis(path, Diagnosis("tiny-vit", "minmax", "W4A4", "run.h5", points, 2, 98.0, 32, 16,
                                          {"loss": "contrastive", "temperature": 3.0},
                                          {"base": table("base", 0.0), "refined": table("refined", -0.1)}, whatif, 2.5))


# ---------------------------------------------------------------- reading in a child process

def differences(saved: Any, loaded: Any, where: str = "") -> list[tuple[str, bool]]:
    """Where ``loaded`` differs from ``saved`` (arrays bit for bit, NaN equal to NaN), each with whether
    only a value differs (same type, same array dtype and shape)."""
    if dataclasses.is_dataclass(saved) and type(saved) is type(loaded):
        return [d for f in dataclasses.fields(saved)
                for d in differences(getattr(saved, f.name), getattr(loaded, f.name), f"{where}.{f.name}")]
    if isinstance(saved, dict) and isinstance(loaded, dict):
        if list(saved) != list(loaded):
            return [(where, False)]
        return [d for key in saved for d in differences(saved[key], loaded[key], f"{where}[{key}]")]
    if isinstance(saved, (list, tuple)) and type(saved) is type(loaded):
        if len(saved) != len(loaded):
            return [(where, False)]
        return [d for i, (a, b) in enumerate(zip(saved, loaded)) for d in differences(a, b, f"{where}[{i}]")]
    if isinstance(saved, np.ndarray) and isinstance(loaded, np.ndarray):
        if saved.dtype != loaded.dtype or saved.shape != loaded.shape:
            return [(where, False)]
        same = saved.tolist() == loaded.tolist() if saved.dtype.kind == "O" else saved.tobytes() == loaded.tobytes()
        return [] if same else [(where, True)]
    if type(saved) is not type(loaded):
        return [(where, False)]
    if saved == loaded or (isinstance(saved, float) and math.isnan(saved) and math.isnan(loaded)):
        return []
    return [(where, True)]


def serve(conn: Any) -> None:
    """The reader process: answers each (reader, original, mutated) with what reading ``mutated`` did.
    On Linux its address space is capped a GiB above what the imports took: a damaged text length can make HDF5
    allocate gigabytes before it reports the damage, which then fails at once instead."""
    status = Path("/proc/self/status")
    if status.exists():   # Linux; elsewhere uncapped
        import resource

        taken = next(int(line.split()[1]) * 1024 for line in status.read_text().splitlines()
                     if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (taken + MEMORY_HEADROOM, taken + MEMORY_HEADROOM))
    saved: dict[str, Any] = {}
    while (job := conn.recv()) is not None:
        kind, original, mutated = job
        try:
            if original not in saved:
                saved[original] = READERS[kind](Path(original))
        except Exception as exc:
            conn.send(("original unreadable", [type(exc).__name__], str(exc)))
            continue
        try:
            loaded = READERS[kind](Path(mutated))
        except Exception as exc:   # judged by the test process
            conn.send(("raised", [c.__name__ for c in type(exc).__mro__], str(exc)))
        else:
            conn.send(("loaded", differences(saved[original], loaded)))


class Reader:
    """The child process that reads; a crash or a hang there fails one case, not the session."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.started = False
        self._start()

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=serve, args=(child,), daemon=True)
        self.process.start()
        child.close()

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.started = False
        self._start()

    def read(self, kind: str, original: Path, mutated: Path) -> tuple:
        self.conn.send((kind, str(original), str(mutated)))
        limit = TIME_LIMIT if self.started else FIRST_READ_LIMIT
        if not self.conn.poll(limit):
            self._restart()
            raise AssertionError(f"reading {mutated.name} took more than {limit:.0f} s (a hang)")
        try:
            outcome = self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            self._restart()
            raise AssertionError(f"the reader process died reading {mutated.name} (exit code {code})") from None
        self.started = True
        return outcome

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


# ---------------------------------------------------------------- fixtures and the judge

@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz")
    return {"run": make_run(folder / "run.h5"), "checkpoint": make_checkpoint(folder / "run.ckpt"),
            "diagnosis": make_diagnosis(folder / "diag.h5")}


@pytest.fixture(scope="module")
def tally(request) -> Counter:
    counts: Counter = Counter()
    yield counts
    lines = [f"fuzzed readers: {sum(counts.values())} cases"]
    for kind in READERS:
        total = sum(n for (k, _, _), n in counts.items() if k == kind)
        lines.append(f"  {kind}: {total} cases")
        lines += [f"    {family}: {outcome}: {n}" for (k, family, outcome), n in sorted(counts.items()) if k == kind]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():   # shown without -s too
        print("\n" + "\n".join(lines))


@pytest.fixture(scope="module")
def fuzz(originals, tally, tmp_path_factory):
    """``fuzz(kind, family, mutate, allowed, must_raise, newer)``: writes a mutated copy of the original
    (``mutate(original, copy)``), reads it in the reader process and judges the outcome. ``allowed``: the
    record fields that may differ when it loads (None: any, but in value only); ``newer``: NewerSchema is
    an answer too."""
    reader = Reader()
    folder = tmp_path_factory.mktemp("mutated")
    numbers = count()

    def run_case(kind: str, family: str, mutate: Callable[[Path, Path], None], allowed: set[str] | None = frozenset(),
                 must_raise: bool = False, newer: bool = False) -> None:
        original = originals[kind]
        mutated = folder / f"case-{next(numbers)}{original.suffix}"
        mutate(original, mutated)
        try:
            outcome = reader.read(kind, original, mutated)
        finally:
            mutated.unlink(missing_ok=True)
        contract = CONTRACT[kind] + (("NewerSchema",) if newer and kind != "checkpoint" else ())
        tally[(kind, family, judged(contract, mutated, outcome, allowed, must_raise))] += 1

    yield run_case
    reader.close()


def field_of(where: str) -> str:
    """``.scales[blocks.0.attn][q].scale`` -> ``scales``: the record's field a difference lies in."""
    return re.match(r"\.(\w+)", where).group(1)


def judged(contract: tuple[str, ...], mutated: Path, outcome: tuple, allowed: set[str] | None,
           must_raise: bool) -> str:
    assert outcome[0] != "original unreadable", f"the unmutated file does not load: {outcome[2]}"
    if outcome[0] == "raised":
        _, classes, message = outcome
        assert classes[0] in contract, f"the reader raised {classes[0]}: {message}"
        assert "\n" not in message and mutated.name in message, f"not one line naming the file: {message!r}"
        return f"error ({classes[0]})"
    diffs = outcome[1]
    assert not must_raise, f"{mutated.name} loaded: {diffs or 'identical'}"
    if not diffs:
        return "loaded, identical"
    if allowed is None:
        structure = [where for where, value in diffs if not value and field_of(where) not in FREE_FORM]
        assert not structure, f"{mutated.name} loaded with another structure: {structure}"
        return VALUE_CHANGED
    assert {field_of(where) for where, _ in diffs} <= allowed, f"{mutated.name} loaded silently changed: {diffs}"
    return "loaded, an optional or descriptive part changed"


# ---------------------------------------------------------------- byte-level damage: every reader

def truncated(size: int) -> Callable[[Path, Path], None]:
    return lambda original, mutated: mutated.write_bytes(original.read_bytes()[:size])


def flipped(flips: list[tuple[int, int]]) -> Callable[[Path, Path], None]:
    def mutate(original: Path, mutated: Path) -> None:
        data = bytearray(original.read_bytes())
        for offset, mask in flips:
            data[offset % len(data)] ^= mask
        mutated.write_bytes(bytes(data))
    return mutate


@pytest.mark.parametrize("kind", list(READERS))
@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_a_truncated_file_is_one_error_line(fuzz, originals, kind, fraction):
    fuzz(kind, "truncated", truncated(int(fraction * originals[kind].stat().st_size)), must_raise=True)


@pytest.mark.parametrize("kind", list(READERS))
@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes_are_caught_or_change_only_a_value(fuzz, kind, flips):
    """HDF5 keeps no checksums: a flip inside a stored value may load as another value of the same type and
    shape (counted). A checkpoint is a zip with CRCs: it loads as saved or not at all."""
    fuzz(kind, "bytes flipped", flipped(flips), allowed=frozenset() if kind == "checkpoint" else None, newer=True)


# ---------------------------------------------------------------- HDF5 parts deleted or replaced

# replacements for an attribute, by the kind of value they are; one of another kind than the original is used
WRONG_ATTRIBUTES: dict[str, Any] = {
    "text": "abc", "number": 2.5, "integer": 7, "negative": -3, "boolean": True, "array": np.array([1, 2]),
    "empty": h5py.Empty("f4"), "JSON list": "[1, 2]", "JSON object": '{"a": 1}', "not UTF-8": np.bytes_(b"\xff\xfe"),
}
RESHAPES = ("a single value", "empty", "one longer", "one shorter", "2-D")


def kind_of(value: Any) -> set[str]:
    """The WRONG_ATTRIBUTES kinds ``value`` already is (so a replacement of those kinds is not a wrong type)."""
    if isinstance(value, (bool, np.bool_)):
        return {"boolean"}
    if isinstance(value, (int, np.integer)):
        return {"integer", "negative"}
    if isinstance(value, (float, np.floating)):
        return {"number", "integer", "negative"}
    text = value.decode() if isinstance(value, bytes) else str(value)
    return {"JSON list"} if text[:1] == "[" else {"JSON object"} if text[:1] == "{" else {"text"}


@lru_cache
def inventory(path: Path) -> tuple[list[str], list[str], list[str]]:
    """Every group, dataset and attribute (``object@name``) of an HDF5 file."""
    groups, datasets, attributes = [], [], []
    with h5py.File(path) as f:
        attributes += [f"/@{name}" for name in f.attrs]

        def visit(name: str, item: Any) -> None:
            (groups if isinstance(item, h5py.Group) else datasets).append(f"/{name}")
            attributes.extend(f"/{name}@{key}" for key in item.attrs)
        f.visititems(visit)
    return groups, datasets, attributes


def reshaped(values: np.ndarray, how: str) -> np.ndarray | None:
    flat = values.reshape(-1)
    out = {"a single value": flat[:1].reshape(()) if flat.size else None, "empty": flat[:0],
           "one longer": np.resize(flat, flat.size + 1), "one shorter": flat[:-1] if flat.size else None,
           "2-D": np.stack([flat, flat])}[how]
    return None if out is None or out.shape == values.shape else out


def retyped(values: np.ndarray, choice: int) -> np.ndarray:
    """The same shape in a type of another kind: integers for floats, floats for integers, numbers for text."""
    if values.dtype.kind == "f":
        options = [np.nan_to_num(values, posinf=1, neginf=-1).astype(np.int32), values > 0, values.astype("S8")]
    elif values.dtype.kind in "iu":
        options = [values.astype(np.float64), values > 0, values.astype("S8")]
    else:
        options = [np.zeros(values.shape, np.int32), np.zeros(values.shape, np.float64)]
    return options[choice % len(options)]


def h5_edit(original: Path, op: str, target: str, choice: int) -> Callable[[Path, Path], None] | None:
    """A copy of the file with ``target`` (``/path`` or ``/path@attribute``) deleted, reshaped, retyped or
    given an attribute of another kind; None when the choice leaves the target as it was."""
    obj, _, attribute = target.partition("@")
    with h5py.File(original) as f:
        if op == "attribute":
            kinds = [k for k in WRONG_ATTRIBUTES if k not in kind_of(f[obj].attrs[attribute])]
            replacement = WRONG_ATTRIBUTES[kinds[choice % len(kinds)]]
        elif op in ("reshape", "retype"):
            values = np.asarray(f[obj][()])
            string = h5py.check_string_dtype(f[obj].dtype) is not None
            new = reshaped(values, RESHAPES[choice % len(RESHAPES)]) if op == "reshape" else retyped(values, choice)
            if new is None:
                return None

    def edit(original: Path, mutated: Path) -> None:
        mutated.write_bytes(original.read_bytes())
        with h5py.File(mutated, "r+") as f:
            if op == "delete":
                del (f[obj].attrs if attribute else f)[attribute or obj]
            elif op == "attribute":
                f[obj].attrs[attribute] = replacement
            else:
                del f[obj]
                f.create_dataset(obj, data=new, dtype=h5py.string_dtype() if string and new.dtype.kind == "O" else None)
    return edit


def h5_case(data: st.DataObject, path: Path) -> tuple[str, str, int]:
    groups, datasets, attributes = inventory(path)
    op = data.draw(st.sampled_from(("delete", "reshape", "retype", "attribute")))
    targets = {"delete": groups + datasets + attributes, "attribute": attributes}.get(op, datasets)
    return op, data.draw(st.sampled_from(targets)), data.draw(st.integers(0, 20))


def allowed_for(rules: list[tuple[str, str, set[str]]], op: str, target: str) -> set[str]:
    """The record fields a mutation may change without an error: an optional part an older layout lacks,
    a descriptive one, or one the reader does not read."""
    for ops, pattern, fields in rules:
        if op in ops.split("|") and re.fullmatch(pattern, target):
            return fields
    return set()


RUN_OPTIONAL = [
    ("delete|attribute", r"/provenance(@.*)?", {"provenance"}),
    ("delete|attribute", r"/@(created|producer|producer_version|host|torch_version|timm_version)", set()),
    ("delete|attribute", r"/config@attn_bits", set()),    # read only when attn_bits_explicit
    ("delete", r"/metrics(@.*)?", {"metrics"}),
    ("delete", r"/calibration@.*", {"calibration"}),
    ("delete", r"/history", {"history"}),
    ("delete", r"/config@search", {"search"}),
    ("delete", r"/config@run_spec", {"spec"}),
    ("delete", r"/config@seed", {"seed"}),
    ("delete", r"/config@(allow_float|attn_bits_explicit)", set()),
    ("delete", r"/@model_source", {"model_source"}),
    ("delete", r"/@weights_sha256", {"weights_sha256"}),
    ("delete", r"/(layers|base)/.*@scheme", set()),        # a uniform point of a file from before schemes
]
DIAGNOSIS_OPTIONAL = [
    ("delete|attribute", r"/@(schema|schema_version)", set()),   # the file's own; the group's are read
    ("delete", r"/diagnosis/whatif", {"whatif"}),
    ("delete", r"/diagnosis/scales/base", {"tables"}),
    ("reshape", r"/diagnosis/whatif/ranking", {"whatif"}),   # only raisable points are ranked: a shorter list is one
]


@FUZZ
@given(data=st.data())
def test_run_file_parts_deleted_or_of_the_wrong_shape_type_or_kind(fuzz, originals, data):
    op, target, choice = h5_case(data, originals["run"])
    edit = h5_edit(originals["run"], op, target, choice)
    if edit is not None:
        fuzz("run", f"{op} a part", edit, allowed_for(RUN_OPTIONAL, op, target))


@FUZZ
@given(data=st.data())
def test_diagnosis_parts_deleted_or_of_the_wrong_shape_type_or_kind(fuzz, originals, data):
    op, target, choice = h5_case(data, originals["diagnosis"])
    edit = h5_edit(originals["diagnosis"], op, target, choice)
    if edit is not None:
        fuzz("diagnosis", f"{op} a part", edit, allowed_for(DIAGNOSIS_OPTIONAL, op, target))


BAD_VALUES = {"scale": (np.nan, np.inf, -np.inf, 0.0, -0.0, -1e-3), "zero_point": (np.nan, np.inf, 0.5),
              "extra": (np.nan, -np.inf)}


@FUZZ
@given(data=st.data())
def test_nan_infinite_zero_or_negative_scales_never_load(fuzz, originals, data):
    _, datasets, _ = inventory(originals["run"])
    target = data.draw(st.sampled_from([d for d in datasets if re.search(r"/(scale|zero_point|extra/\w+)$", d)]))
    kind = "extra" if "/extra/" in target else target.rsplit("/", 1)[1]
    value, index = data.draw(st.sampled_from(BAD_VALUES[kind])), data.draw(st.integers(0, 10**6))

    def edit(original: Path, mutated: Path) -> None:
        mutated.write_bytes(original.read_bytes())
        with h5py.File(mutated, "r+") as f:
            values = f[target][()]
            flat = np.array(values, dtype=np.float64).reshape(-1)
            flat[index % flat.size] = value
            f[target][()] = flat.reshape(np.shape(values))

    fuzz("run", f"{kind} made NaN, infinite, zero or negative", edit, must_raise=True)


# ---------------------------------------------------------------- checkpoint content

WRONG_JSON: dict[str, Any] = {"text": "abc", "number": 2.5, "integer": 7, "negative": -3, "boolean": True,
                              "null": None, "list": [1, 2], "object": {"a": 1}, "NaN": math.nan,
                              "infinite": math.inf}
COUNTS = ("n_blocks", "n_selected", "step", "evaluations")
RNG_STATES = ({"bit_generator": "MT19937", "state": {"key": [0], "pos": 0}}, {"bit_generator": "PCG64"},
              {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}, "has_uint32": 0, "uinteger": 0},
              {"state": {"state": 1, "inc": 1}})
BAD_METAS = ("not JSON", "[1, 2]", 3.5)


def json_kind(key: str, value: Any) -> set[str]:
    """The WRONG_JSON kinds of ``value``'s type (a replacement of those would be a value, not a wrong type)."""
    if value is None:   # a checkpoint's joint phase when none is under way
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "negative"}
    if isinstance(value, float):   # the selected score of nothing selected yet is NaN, of select=last infinite
        return {"number", "integer", "negative"} | ({"NaN", "infinite"} if key == "selected_score" else set())
    if isinstance(value, dict):
        return set() if key == "rng_state" else {"object"}
    return {"text"} if isinstance(value, str) else {"list"}


def npz_edit(meta_edit: Callable[[dict], None] | None = None,
             arrays_edit: Callable[[dict], None] | None = None) -> Callable[[Path, Path], None]:
    def edit(original: Path, mutated: Path) -> None:
        with np.load(original) as data:
            arrays = {key: data[key] for key in data.files}
        if meta_edit is not None:
            meta = json.loads(str(arrays["meta"]))
            meta_edit(meta)
            arrays["meta"] = np.array(json.dumps(meta))
        if arrays_edit is not None:
            arrays_edit(arrays)
        with open(mutated, "wb") as f:
            np.savez(f, **arrays)
    return edit


@FUZZ
@given(data=st.data())
def test_checkpoint_meta_missing_or_of_the_wrong_type_or_count(fuzz, originals, data):
    with np.load(originals["checkpoint"]) as saved:
        meta = json.loads(str(saved["meta"]))
    op = data.draw(st.sampled_from(("delete", "replace", "count off by one", "rng_state", "meta")))
    allowed: set[str] = set()
    if op == "delete":
        key = data.draw(st.sampled_from(sorted(meta)))
        edit = npz_edit(lambda m: m.pop(key))
        allowed = {key} & {"spec", "config", "provenance"}   # version 1 checkpoints have none
    elif op == "replace":
        key = data.draw(st.sampled_from(sorted(meta)))
        kind = data.draw(st.sampled_from([k for k in WRONG_JSON if k not in json_kind(key, meta[key])]))
        edit = npz_edit(lambda m: m.update({key: WRONG_JSON[kind]}))
        allowed = {key} & {"spec", "config", "provenance"} if kind == "null" else set()
    elif op == "count off by one":
        key, shift = data.draw(st.sampled_from(COUNTS)), data.draw(st.sampled_from((-1, 1)))
        edit = npz_edit(lambda m: m.update({key: m[key] + shift}))
    elif op == "rng_state":
        state = data.draw(st.sampled_from(RNG_STATES))
        edit = npz_edit(lambda m: m.update(rng_state=state))
    else:
        bad = data.draw(st.sampled_from(BAD_METAS))
        edit = npz_edit(arrays_edit=lambda a: a.update(meta=np.array(bad)))
    fuzz("checkpoint", f"meta: {op}", edit, allowed, must_raise=not allowed)


@FUZZ
@given(data=st.data())
def test_checkpoint_arrays_missing_or_of_the_wrong_shape_type_or_value(fuzz, originals, data):
    with np.load(originals["checkpoint"]) as saved:
        names = sorted(key for key in saved.files if key != "meta")
    op = data.draw(st.sampled_from(("delete", "2-D", "retype", "one longer", "one shorter", "bad scale", "extra")))
    key = data.draw(st.sampled_from([n for n in names if n.startswith(("vector_", "selected_"))]
                                    if op == "bad scale" else names))
    choice, index = data.draw(st.integers(0, 20)), data.draw(st.integers(0, 10**6))

    def edit(arrays: dict) -> None:
        values = arrays[key]
        if op == "delete":
            del arrays[key]
        elif op == "2-D":
            arrays[key] = np.stack([values, values])
        elif op == "retype":
            arrays[key] = retyped(values, choice)
        elif op == "one longer":
            arrays[key] = np.resize(values, values.size + 1)
        elif op == "one shorter":
            arrays[key] = values[:-1]
        elif op == "bad scale":
            values = values.copy()
            values[index % values.size] = BAD_VALUES["scale"][choice % len(BAD_VALUES["scale"])]
            arrays[key] = values
        else:
            arrays["vector_9"] = arrays["vector_0"]

    fuzz("checkpoint", f"arrays: {op}", npz_edit(arrays_edit=edit), must_raise=True)

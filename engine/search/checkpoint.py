"""The search's resumable state and its checkpoint file.

A checkpoint is written after every block step, where the population has just been written back
and is rebuilt from copies at the next step, so the state is small: the current vector of every
block, the loss they give, the numpy Generator state, counters, the history and the selected step.
Continuing from it gives the same final scales as an uninterrupted run.

It also holds the whole run as made: the RunSpec (weights path as given, pretrained, data folder,
held-out source, device and compile mode), the search config, the identity a resume is checked
against, and how it was computed (provenance.py), so any front end can rebuild the run from the
checkpoint alone.

During the guided search's joint phase, a checkpoint is also written at each of its checks: it then
holds the phase's progress (joint.py's ``JointProgress``: Adam's point and moments, the averaged and
the best point) and the search goes on from there; ``joint_done`` says the phase is over.

Format: one ``.npz`` (numpy arrays + a JSON string; no pickle, so loading a file cannot run code),
written atomically (``atomic.py``): a reader or a crash never sees a half-written checkpoint.
Version 1 files (before the spec and config were stored) still load; their ``spec`` is None. Version
1 and 2 files (before the joint phase was checkpointed) were written after a block step, so after
any joint phase: they load with ``joint_done``.
"""
from __future__ import annotations

import json
import math
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import CheckpointError
from ..readcheck import Malformed, bad_values, is_int, is_real, one_line, shown
from ..runrecord import History
from .joint import JointProgress

FORMAT = "cptv-search-checkpoint"
VERSION = 3
READS = (1, 2, 3)
_EVAL_FIELDS = ("eval_loss", "eval_pass", "eval_block")
_STEP_FIELDS = ("step_heldout", "step_loss", "step_block", "step_pass")


@dataclass
class SearchState:
    """Where a run stands after ``step`` block steps."""
    vectors: list[np.ndarray]           # current searched vector of every block
    rng_state: dict[str, Any]
    base_loss: float
    heldout_fp_top1: float
    heldout_base_top1: float
    current_loss: float
    selected_step: int = 0              # 0 = the base
    selected_score: float = float("nan")
    selected_vectors: list[np.ndarray] = field(default_factory=list)
    step: int = 0
    evaluations: int = 1                # the base evaluation
    seconds: float = 0.0                # search time so far (pauses excluded)
    eval_loss: list[float] = field(default_factory=list)
    eval_pass: list[int] = field(default_factory=list)
    eval_block: list[int] = field(default_factory=list)
    step_heldout: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    step_block: list[int] = field(default_factory=list)
    step_pass: list[int] = field(default_factory=list)
    joint: JointProgress | None = None  # the joint phase under way (at its last check)
    joint_done: bool = False            # the joint phase is over (or, before version 3, a block step was)

    def history(self) -> History:
        return History(loss=np.asarray(self.eval_loss, np.float64), eval_pass=np.asarray(self.eval_pass, np.int32),
                       eval_block=np.asarray(self.eval_block, np.int32),
                       heldout_top1=np.asarray(self.step_heldout, np.float64),
                       step_loss=np.asarray(self.step_loss, np.float64),
                       block_index=np.asarray(self.step_block, np.int32),
                       pass_index=np.asarray(self.step_pass, np.int32))


_JOINT_ARRAYS = ("coords", "exp_avg", "exp_avg_sq", "average", "best")   # joint_<name>; best may be absent
_JOINT_SCALARS = ("step", "start_loss", "best_loss", "since_best", "check_loss")
_SCALARS = ("rng_state", "base_loss", "heldout_fp_top1", "heldout_base_top1", "current_loss", "selected_step",
            "selected_score", "step", "evaluations", "seconds")


@dataclass
class Checkpoint:
    """A checkpoint as read back: the state, and the run it belongs to."""
    state: SearchState
    identity: dict[str, Any]                 # as stored; compare through identity.saved_identity
    spec: dict[str, Any] | None = None       # RunSpec.to_dict() as made; None in version 1 files
    config: dict[str, Any] | None = None     # SearchConfig.to_dict(); None in version 1 files
    provenance: dict[str, Any] | None = None


def save_checkpoint(path: str | Path, state: SearchState, identity: dict[str, Any], spec: dict[str, Any] | None = None,
                    config: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None) -> Path:
    """Write atomically. ``identity`` (run spec, search config, base-scale fingerprint) lets a
    resume refuse a checkpoint of another run instead of silently mixing two; ``spec`` and
    ``config`` let it rebuild the run."""
    path = Path(path)
    joint = state.joint
    meta = {"format": FORMAT, "version": VERSION, "identity": identity, "spec": spec, "config": config,
            "provenance": provenance, "n_blocks": len(state.vectors), "n_selected": len(state.selected_vectors),
            "joint_done": state.joint_done,
            "joint": None if joint is None else {**{k: getattr(joint, k) for k in _JOINT_SCALARS},
                                                 "has_best": joint.best is not None},
            **{k: getattr(state, k) for k in _SCALARS}}
    arrays = {"meta": np.array(json.dumps(meta))}
    if joint is not None:
        arrays.update({f"joint_{name}": getattr(joint, name) for name in _JOINT_ARRAYS
                       if getattr(joint, name) is not None})
    arrays.update({f"vector_{i}": v for i, v in enumerate(state.vectors)})
    arrays.update({f"selected_{i}": v for i, v in enumerate(state.selected_vectors)})
    arrays.update({name: np.asarray(getattr(state, name)) for name in _EVAL_FIELDS + _STEP_FIELDS})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


# What numpy and zipfile raise on a damaged archive (bad CRC, headers, sizes, an unknown compression or an
# encryption flag, a broken .npy header, which numpy tokenizes as Python); MemoryError is left out: it may
# be this machine's.
_READ_ERRORS = (OSError, KeyError, ValueError, EOFError, RuntimeError, NotImplementedError, OverflowError,
                SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error, struct.error)
_INTEGER_FIELDS = ("eval_pass", "eval_block", "step_block", "step_pass")
_LOSSES = ("base_loss", "current_loss")
_TOP1 = ("heldout_fp_top1", "heldout_base_top1")


def _count(meta: dict[str, Any], key: str, low: int, high: float = math.inf) -> int:
    value = meta.get(key)
    if not is_int(value) or not low <= value <= high:
        bounds = f"from {low}" + (f" to {high}" if high != math.inf else "")
        raise Malformed(f"{key} is {shown(value)}, not a count {bounds}")
    return value


def _vector(data: Any, key: str) -> np.ndarray:
    """A block's vector: the scales of its points, so finite and positive."""
    vector = data[key]
    if vector.ndim != 1 or vector.dtype.kind != "f":
        raise Malformed(f"{key} is a {vector.ndim}-D {vector.dtype} array, not a 1-D float vector")
    bad = bad_values(vector, positive=True)
    if bad:
        raise Malformed(f"{key} has {bad} scale(s)")
    return vector


def _series(data: Any, key: str, integers: bool) -> list:
    values = data[key]
    kinds = "iu" if integers else "f"
    if values.ndim != 1 or (values.dtype.kind not in kinds and values.size):   # an empty list is saved as float
        raise Malformed(f"{key} is a {values.ndim}-D {values.dtype} array, not a 1-D list of "
                         f"{'integers' if integers else 'numbers'}")
    return values.tolist()


def _read(data: Any) -> Checkpoint:
    """The checkpoint in an open .npz, each part checked against the others."""
    meta = json.loads(str(data["meta"]))
    if not isinstance(meta, dict):
        raise Malformed("its meta is not a JSON object")
    if meta.get("format") != FORMAT or not is_int(meta.get("version")) or meta["version"] not in READS:
        raise Malformed(f"it is not a {FORMAT} file of version {' or '.join(map(str, READS))}")
    missing = [key for key in ("identity", "n_blocks", "n_selected", *_SCALARS) if key not in meta]
    if missing:
        raise Malformed(f"its meta has no {', '.join(missing)}")
    n_blocks = _count(meta, "n_blocks", 0)
    step, evaluations = _count(meta, "step", 0), _count(meta, "evaluations", 1)
    selected_step = _count(meta, "selected_step", 0, step)
    n_selected = _count(meta, "n_selected", 0, n_blocks)
    config = meta.get("config")
    for key in ("spec", "config", "provenance"):
        if not isinstance(meta.get(key), (dict, type(None))):
            raise Malformed(f"{key} is {type(meta[key]).__name__}, not a JSON object")
    if not isinstance(meta["identity"], dict):
        raise Malformed(f"identity is {type(meta['identity']).__name__}, not a JSON object")
    # a step is selected by copying every vector, except under select=last, which keeps none
    select = config.get("select") if config else None
    expected = {0, n_blocks} if select is None else {n_blocks if select != "last" and selected_step else 0}
    if n_selected not in expected or (n_selected and not selected_step):
        raise Malformed(f"it holds {n_selected} selected vectors for {n_blocks} blocks at selected step "
                         f"{selected_step}" + (f" with select={select}" if select else ""))
    joint_done, joint = _joint_meta(meta, step)
    names = {"meta", *(f"vector_{i}" for i in range(n_blocks)), *(f"selected_{i}" for i in range(n_selected)),
             *_EVAL_FIELDS, *_STEP_FIELDS}
    if joint is not None:
        names |= {f"joint_{name}" for name in _JOINT_ARRAYS if name != "best" or joint["has_best"]}
    if set(data.files) != names:
        absent, extra = sorted(names - set(data.files)), sorted(set(data.files) - names)
        raise Malformed(f"its arrays do not match n_blocks={n_blocks}, n_selected={n_selected}: "
                         + "; ".join(part for part in (f"missing {', '.join(absent)}" if absent else "",
                                                       f"unexpected {', '.join(extra)}" if extra else "") if part))
    vectors = [_vector(data, f"vector_{i}") for i in range(n_blocks)]
    selected = [_vector(data, f"selected_{i}") for i in range(n_selected)]
    for i, (vector, chosen) in enumerate(zip(vectors, selected)):
        if chosen.shape != vector.shape:
            raise Malformed(f"selected_{i} has shape {chosen.shape}, vector_{i} has {vector.shape}")
    lists = {key: _series(data, key, key in _INTEGER_FIELDS) for key in _EVAL_FIELDS + _STEP_FIELDS}
    # one entry per evaluation (none in a state made without a history, like SearchState's defaults) and per step
    if len(lists["eval_loss"]) not in (0, evaluations):
        raise Malformed(f"eval_loss has {len(lists['eval_loss'])} entries, evaluations says {evaluations}")
    for key in _EVAL_FIELDS[1:]:
        if len(lists[key]) != len(lists["eval_loss"]):
            raise Malformed(f"{key} has {len(lists[key])} entries, eval_loss has {len(lists['eval_loss'])}")
    for key in _STEP_FIELDS:
        if len(lists[key]) != step:
            raise Malformed(f"{key} has {len(lists[key])} entries, step says {step}")
    for key in _LOSSES + _TOP1:
        if not is_real(meta[key]) or not math.isfinite(meta[key]):
            raise Malformed(f"{key} is {shown(meta[key])}, not a finite number")
    for key in ("selected_score", "seconds"):
        if not is_real(meta[key]):
            raise Malformed(f"{key} is {shown(meta[key])}, not a number")
    if not 0 <= meta["seconds"] < math.inf:
        raise Malformed(f"seconds is {shown(meta['seconds'])}, not a duration")
    rng_state = meta["rng_state"]
    if not isinstance(rng_state, dict):
        raise Malformed(f"rng_state is {type(rng_state).__name__}, not a generator state")
    if rng_state:   # the search's numpy Generator (PCG64) must take it back
        try:
            np.random.PCG64().state = rng_state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise Malformed(f"rng_state is not a PCG64 state ({one_line(exc)})") from None
    if joint is not None:
        joint = _joint_progress(data, joint, sum(v.size for v in vectors))
    state = SearchState(vectors=vectors, selected_vectors=selected, **{k: meta[k] for k in _SCALARS}, **lists,
                        joint=joint, joint_done=joint_done)
    return Checkpoint(state, meta["identity"], meta.get("spec"), config, meta.get("provenance"))


def _joint_meta(meta: dict[str, Any], step: int) -> tuple[bool, dict[str, Any] | None]:
    """(joint_done, the joint phase's scalars or None), checked; files before version 3 are past it."""
    if meta["version"] < 3:
        return True, None
    missing = [key for key in ("joint_done", "joint") if key not in meta]
    if missing:
        raise Malformed(f"its meta has no {', '.join(missing)}")
    done, joint = meta["joint_done"], meta["joint"]
    if not isinstance(done, bool):
        raise Malformed(f"joint_done is {shown(done)}, not true or false")
    if joint is None:
        return done, None
    if not isinstance(joint, dict) or set(joint) != {*_JOINT_SCALARS, "has_best"}:
        raise Malformed(f"joint is {shown(joint)}, not the joint phase's {', '.join(_JOINT_SCALARS)} and has_best")
    if not isinstance(joint["has_best"], bool):
        raise Malformed(f"the joint phase's has_best is {shown(joint['has_best'])}, not true or false")
    if done or step:
        raise Malformed("it holds a joint phase under way after the phase " + ("ended" if done else "and a block step"))
    _count(joint, "step", 1)
    _count(joint, "since_best", 0)
    for key in ("start_loss", "best_loss", "check_loss"):
        if not is_real(joint[key]) or not math.isfinite(joint[key]):
            raise Malformed(f"the joint phase's {key} is {shown(joint[key])}, not a finite number")
    return done, joint


def _joint_progress(data: Any, joint: dict[str, Any], size: int) -> JointProgress:
    """The joint phase's progress from its arrays: one finite value per searched scale each."""
    arrays = {"best": None}
    for name in _JOINT_ARRAYS if joint["has_best"] else _JOINT_ARRAYS[:-1]:
        key = f"joint_{name}"
        values = data[key]
        if values.shape != (size,) or values.dtype.kind != "f":
            raise Malformed(f"{key} is a {values.dtype} array of shape {values.shape}, not {size} numbers "
                            "(one per searched scale)")
        bad = bad_values(values)
        if bad:
            raise Malformed(f"{key} has {bad} value(s)")
        arrays[name] = values
    return JointProgress(**arrays, **{key: joint[key] for key in _JOINT_SCALARS})


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; one CheckpointError line naming the file and what is wrong if it is not a
    search checkpoint or is damaged (FileNotFoundError if it is missing)."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise Malformed("it is a single .npy array, not a checkpoint archive")
        with loaded as data:
            return _read(data)
    except FileNotFoundError:
        raise
    except (Malformed, *_READ_ERRORS) as exc:
        raise CheckpointError(f"cannot read search checkpoint {path}: {one_line(exc)}") from None

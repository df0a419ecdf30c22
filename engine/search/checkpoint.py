"""The search's resumable state and its checkpoint file.

A checkpoint is written after every block step, where the population has just been written back
and is rebuilt from copies at the next step, so the state is small: the current vector of every
block, the loss they give, the numpy Generator state, counters, the history and the selected step.
Continuing from it gives the same final scales as an uninterrupted run.

It also holds the whole run as made: the RunSpec (weights path as given, pretrained, data folder,
held-out source, device and compile mode), the search config, the identity a resume is checked
against, and how it was computed (provenance.py), so any front end can rebuild the run from the
checkpoint alone.

Format: one ``.npz`` (numpy arrays + a JSON string; no pickle, so loading a file cannot run code),
written atomically (``atomic.py``): a reader or a crash never sees a half-written checkpoint.
Version 1 files (before the spec and config were stored) still load; their ``spec`` is None.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..runrecord import History

FORMAT = "cptv-search-checkpoint"
VERSION = 2
READS = (1, 2)
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

    def history(self) -> History:
        return History(loss=np.asarray(self.eval_loss, np.float64), eval_pass=np.asarray(self.eval_pass, np.int32),
                       eval_block=np.asarray(self.eval_block, np.int32),
                       heldout_top1=np.asarray(self.step_heldout, np.float64),
                       step_loss=np.asarray(self.step_loss, np.float64),
                       block_index=np.asarray(self.step_block, np.int32),
                       pass_index=np.asarray(self.step_pass, np.int32))


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
    meta = {"format": FORMAT, "version": VERSION, "identity": identity, "spec": spec, "config": config,
            "provenance": provenance, "n_blocks": len(state.vectors), "n_selected": len(state.selected_vectors),
            **{k: getattr(state, k) for k in _SCALARS}}
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"vector_{i}": v for i, v in enumerate(state.vectors)})
    arrays.update({f"selected_{i}": v for i, v in enumerate(state.selected_vectors)})
    arrays.update({name: np.asarray(getattr(state, name)) for name in _EVAL_FIELDS + _STEP_FIELDS})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``; ValueError with the reason if the file is not a search checkpoint."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT or meta.get("version") not in READS:
                raise ValueError(f"{path} is not a {FORMAT} file of version {' or '.join(map(str, READS))}")
            vectors = [data[f"vector_{i}"] for i in range(meta["n_blocks"])]
            selected = [data[f"selected_{i}"] for i in range(meta["n_selected"])]
            lists = {name: data[name].tolist() for name in _EVAL_FIELDS + _STEP_FIELDS}
    except (OSError, KeyError, json.JSONDecodeError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"cannot read search checkpoint {path}: {exc}") from None
    state = SearchState(vectors=vectors, selected_vectors=selected, **{k: meta[k] for k in _SCALARS}, **lists)
    return Checkpoint(state, meta["identity"], meta.get("spec"), meta.get("config"), meta.get("provenance"))

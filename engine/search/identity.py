"""Which run a run file or a checkpoint belongs to: the one rule every resume and every sweep applies.

Two runs are the same run when their RunSpecs agree outside ``runrecord.NOT_IDENTITY`` (the device,
the compile mode, where the weights file lies), their weights hash agrees, and their searches agree
on every field the strategy uses (``config.search_identity``). Run files and checkpoints of every
earlier layout go through the same rule: a file that predates a recorded field is compared on what
it records, and a search field added since is filled with the value every earlier run used.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..runrecord import RunRecord, run_identity
from .config import search_identity


def search_run_identity(spec: dict[str, Any], search: dict[str, Any] | None,
                        weights_sha256: str | None) -> dict[str, Any]:
    """``run_identity`` of a RunSpec's values and a search's values (a config's, or a file's). The bit plan
    is part of the spec's quantization (``quant.plan``); a spec recorded before plans existed was uniform."""
    return run_identity(with_uniform_plan(spec), None if search is None else search_identity(search), weights_sha256)


def with_uniform_plan(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with ``quant.plan`` = [] where it records a quantization without a plan (an older file or
    checkpoint: every run before bit plans was uniform), so a mixed-precision run never matches one."""
    quant = spec.get("quant")
    if not isinstance(quant, dict) or "plan" in quant:
        return spec
    return {**spec, "quant": {**quant, "plan": []}}


def record_identity(record: RunRecord) -> dict[str, Any]:
    """The identity a run file records. Files written before ``spec`` was stored know only the model,
    quantization and seed of their spec: the other fields are unknown, and ``identity_mismatch`` skips them."""
    spec = record.spec if record.spec is not None else {
        "model": record.model_name, "quant": asdict(record.quant), "seed": record.seed}
    return {**search_run_identity(spec, record.search, record.weights_sha256), **thread_dependence(record.provenance)}


def saved_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's stored identity under today's rule: older checkpoints stored every search field."""
    if isinstance(identity.get("spec"), dict):
        identity = {**identity, "spec": with_uniform_plan(identity["spec"])}
    if "config" not in identity:
        return identity
    return {**identity, "config": search_identity(identity["config"])}


def thread_dependence(provenance: dict[str, Any] | None) -> dict[str, Any]:
    """``{"threads": n}`` when a run's results depend on its thread count (its provenance says it was
    computed without thread-invariant products, threads.py), else nothing: such a run is the same run
    only on the same number of threads."""
    if provenance and provenance.get("thread_invariant") is False:
        return {"threads": provenance.get("threads")}
    return {}

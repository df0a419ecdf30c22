"""What a sweep will do: its grid of quantizers × bit-widths × bit plans × seeds, each cell's run file,
and which are done already.

Run files get deterministic names in the workspace folder, which makes a sweep resumable without
any sweep-level state on disk: a run whose file exists, loads and has this run's identity
(``search/identity.py``, the rule a search resume uses too) is done. A damaged file is to be moved
aside; a file of a newer schema, a locked file or one this user may not read blocks its cell.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..device import resolve_device
from ..models import create_model
from ..pipeline import RunSpec
from ..plan.file import BitPlan
from ..provenance import provenance
from ..quant import QuantConfig, available_quantizers, parse_bits
from ..runrecord import RunRecord, identity_mismatch, spec_values
from ..scalefile import DamagedFile, ScaleFileError, load_run
from ..search.config import SearchConfig
from ..search.identity import record_identity, search_run_identity, thread_dependence

CHECKPOINT_DIR = ".checkpoints"


@dataclass(frozen=True)
class SweepGrid:
    """What varies between the runs of a sweep; everything else is shared (RunSpec, SearchConfig).

    ``plans`` is the bit-plan axis: ``None`` is the uniform plan of ``bits``; a BitPlan gives its points
    their widths, as ``search --plan`` does, under each of ``quantizers`` and ``bits`` (which then set
    only the points the plan leaves out). With plans only, an empty ``quantizers`` or ``bits`` means each
    plan's own quantizer or base widths."""
    quantizers: tuple[str, ...]
    bits: tuple[str, ...]                  # "W4A8", ...
    seeds: tuple[int, ...]
    attn_bits: int | None = None
    plans: tuple[BitPlan | None, ...] = (None,)

    def __post_init__(self) -> None:
        uniform = None in self.plans
        for name in ("quantizers", "bits", "seeds", "plans"):
            values = getattr(self, name)
            if not values and (uniform or name in ("seeds", "plans")):
                raise ValueError(f"a sweep needs at least one value of {name}"
                                 + ("" if name in ("seeds", "plans") else " (only plans bring their own)"))
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has a value twice: {', '.join(map(_plan_label, values))}")
        unknown = [q for q in self.quantizers if q not in available_quantizers()]
        if unknown:
            raise ValueError(f"unknown quantizer {unknown[0]!r}; known: {', '.join(available_quantizers())}")
        for bits in self.bits:
            parse_bits(bits)
        configs = self.configs()
        if len(set(configs)) != len(configs):
            raise ValueError("two plans give every point the same width: the grid would search one run twice")

    @classmethod
    def parse(cls, quantizers: str, bits: str, seeds: str, attn_bits: int | None = None,
              plans: tuple[BitPlan | None, ...] = (None,)) -> "SweepGrid":
        """From comma-separated text, as typed on the command line or in a form."""
        def items(text: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in text.split(",") if item.strip())

        try:
            seed_values = tuple(int(s) for s in items(seeds))
        except ValueError:
            raise ValueError(f"seeds must be integers separated by commas, got {seeds!r}") from None
        return cls(items(quantizers), tuple(b.upper() for b in items(bits)), seed_values, attn_bits, tuple(plans))

    def configs(self) -> list[QuantConfig]:
        """Every quantization of the grid: quantizer-major, then bits, then plan."""
        return [_config(quantizer, bits, self.attn_bits, plan) for quantizer in self.quantizers or (None,)
                for bits in self.bits or (None,) for plan in self.plans]

    def cells(self) -> list[tuple[QuantConfig, int]]:
        """Seed-major order: an interrupted sweep already holds the whole grid for its first seed."""
        return [(quant, seed) for seed in self.seeds for quant in self.configs()]


def _config(quantizer: str | None, bits: str | None, attn_bits: int | None, plan: BitPlan | None) -> QuantConfig:
    if plan is None:
        return QuantConfig.from_bits(quantizer, bits, attn_bits)
    return plan.quant_config(quantizer, bits, attn_bits)


def _plan_label(value: object) -> str:
    """How a grid value is named in an error: a plan by its widths' digest, as run labels name it."""
    if isinstance(value, BitPlan):
        return value.quant_config().bits_label
    return "uniform" if value is None else str(value)


def _check_plans_fit(grid: SweepGrid, model: str) -> None:
    """ValueError naming the first plan of the grid made for another model (before any run starts)."""
    for plan in grid.plans:
        if plan is not None and plan.model != model:
            raise ValueError(f"plan {_plan_label(plan)} in the sweep is a plan for {plan.model}, not for {model}")


def run_file_name(model: str, quant: QuantConfig, seed: int) -> str:
    """``<model>_<quantizer>_<bits>_s<seed>.h5``; characters unsafe in file names become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model}_{quant.quantizer}_{quant.bits_label}_s{seed}") + ".h5"


@dataclass(frozen=True)
class PlannedRun:
    index: int                             # 1-based position in the sweep
    total: int
    spec: RunSpec
    path: Path                             # the run file
    checkpoint: Path                       # the search's checkpoint while the run is unfinished
    done: bool                             # the run file exists, loads and has this identity: skipped
    identity: dict[str, Any]               # search/identity.py's identity of this run
    damaged: str | None = None             # why the file at ``path`` will never load: moved aside, then run
    blocked: str | None = None             # why the file at ``path`` cannot be read now: the cell fails

    @property
    def label(self) -> str:
        return f"{self.spec.quant.quantizer} {self.spec.quant.bits_label} s{self.spec.seed}"


def _mismatch(record: RunRecord, identity: dict[str, Any], path: Path) -> str | None:
    """What differs between an existing run file and the run the sweep would make, if anything."""
    if record.base is None:
        return "it is a plain quantization, not a search run"
    return identity_mismatch(record_identity(record), identity, str(path))


def _existing(path: Path, identity: dict[str, Any]) -> tuple[bool, str | None, str | None]:
    """(done, damaged, blocked) for the file at a cell's name. A finished run of this identity is
    done; a damaged file is to be moved aside; one of a newer schema, locked or unreadable by this user
    blocks its cell (never overwritten); a readable run of another identity refuses the sweep."""
    if not path.exists():
        return False, None, None
    try:
        record = load_run(path)
    except DamagedFile as exc:
        return False, str(exc), None
    except ScaleFileError as exc:          # NewerSchema, FileUnavailable
        return False, None, str(exc)
    except OSError as exc:
        return False, None, f"{path}: {exc.strerror or exc}"
    problem = _mismatch(record, identity, path)
    if problem:
        raise ValueError(f"{path} exists but differs from this sweep: {problem}; use another output folder")
    return True, None, None


def _weights_sha256(spec: RunSpec) -> str:
    """The hash of the weights this sweep's runs load (what ``prepare`` would record)."""
    return create_model(spec.model, weights=spec.weights, pretrained=spec.pretrained)[1].weights_sha256


def plan_sweep(grid: SweepGrid, base: RunSpec, config: SearchConfig, workspace: str | Path,
               threads: int | None = None) -> list[PlannedRun]:
    """The sweep's runs and which are done already (so a view can show "6 of 18 done" before starting).
    Planning touches no file. The weights are loaded (to hash them) only when the workspace holds a run
    file or checkpoint to compare. ``threads``: of each cell, when it differs from this process's."""
    _check_plans_fit(grid, base.model)
    workspace = Path(workspace)
    cells = [(index, replace(base, quant=quant, seed=seed)) for index, (quant, seed) in enumerate(grid.cells(), 1)]
    paths = [workspace / run_file_name(spec.model, spec.quant, spec.seed) for _, spec in cells]
    checkpoints = [workspace / CHECKPOINT_DIR / f"{path.stem}.ckpt" for path in paths]
    existing = any(path.exists() for path in paths + checkpoints)
    weights_sha256 = _weights_sha256(base) if existing else None
    computed = {**provenance(resolve_device(base.device), base.compile), **({"threads": threads} if threads else {})}
    runs = []
    for (index, spec), path, checkpoint in zip(cells, paths, checkpoints):
        identity = {**search_run_identity(spec_values(spec), config.to_dict(), weights_sha256),
                    **thread_dependence(computed)}
        done, damaged, blocked = _existing(path, identity)
        runs.append(PlannedRun(index, len(cells), spec, path, checkpoint, done, identity, damaged, blocked))
    return runs


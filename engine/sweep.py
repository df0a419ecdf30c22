"""Sweeps: a grid of quantizers × bit-widths × seeds, one search and one run file per cell.

The runner is a generator of sweep-level events that wrap each run's search events, so the app's
worker consumes a sweep exactly like a single search (pause and stop act between two events) and
the CLI prints its progress from the same stream. Run files get deterministic names in the
workspace folder, which makes a sweep resumable without any sweep-level state on disk: a run whose
file exists, loads and has this run's identity (``search/identity.py``, the rule a search resume
uses too) is skipped, and a run interrupted midway continues from the search's own checkpoint
(kept in ``<workspace>/.checkpoints`` until its run file is written).

Nothing a sweep cannot read is overwritten: a damaged file (truncated, not a run file) is moved
aside as ``NAME.unreadable-N.h5`` before its cell runs again; a file of a newer schema, a locked
file or one this user may not read is left untouched and its cell fails. A cell that fails, for
that or any other reason, is a failed row and the grid goes on, on both backends.

Two backends run the cells: ``local`` searches them one after another in this process; ``ray``
(``engine.sweep_ray``) runs each as a task on a Ray cluster and streams its events back, so the
same events come out of both and this process writes every run file.
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .device import resolve_device
from .library import LibraryRow, moved_aside_name, read_row
from .models import create_model
from .pipeline import RunSpec
from .provenance import provenance
from .quant import QuantConfig, available_quantizers, parse_bits
from .runrecord import RunRecord, identity_mismatch, spec_values
from .scalefile import DamagedFile, ScaleFileError, load_run, save_run
from .search import run as search_run
from .search.checkpoint import load_checkpoint
from .search.config import SearchConfig
from .search.events import Event, Finished
from .search.identity import record_identity, saved_identity, search_run_identity, thread_dependence

if TYPE_CHECKING:
    from .sweep_ray import CellResources

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoints"
SearchFn = Callable[..., Iterator[Event]]     # run_search's signature: (spec, config, checkpoint=, resume=)
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class SweepGrid:
    """What varies between the runs of a sweep; everything else is shared (RunSpec, SearchConfig)."""
    quantizers: tuple[str, ...]
    bits: tuple[str, ...]                  # "W4A8", ...
    seeds: tuple[int, ...]
    attn_bits: int | None = None

    def __post_init__(self) -> None:
        for name in ("quantizers", "bits", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"a sweep needs at least one value of {name}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has a value twice: {', '.join(map(str, values))}")
        unknown = [q for q in self.quantizers if q not in available_quantizers()]
        if unknown:
            raise ValueError(f"unknown quantizer {unknown[0]!r}; known: {', '.join(available_quantizers())}")
        for bits in self.bits:
            parse_bits(bits)

    @classmethod
    def parse(cls, quantizers: str, bits: str, seeds: str, attn_bits: int | None = None) -> "SweepGrid":
        """From comma-separated text, as typed on the command line or in a form."""
        def items(text: str) -> tuple[str, ...]:
            return tuple(item.strip() for item in text.split(",") if item.strip())

        try:
            seed_values = tuple(int(s) for s in items(seeds))
        except ValueError:
            raise ValueError(f"seeds must be integers separated by commas, got {seeds!r}") from None
        return cls(items(quantizers), tuple(b.upper() for b in items(bits)), seed_values, attn_bits)

    def cells(self) -> list[tuple[QuantConfig, int]]:
        """Seed-major order: an interrupted sweep already holds the whole grid for its first seed."""
        return [(QuantConfig.from_bits(q, b, self.attn_bits), seed)
                for seed in self.seeds for q in self.quantizers for b in self.bits]


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


# ---------------------------------------------------------------- events

@dataclass(frozen=True)
class SweepStarted:
    runs: tuple[PlannedRun, ...]


@dataclass(frozen=True)
class RunSkipped:
    """The run's file already exists and loads."""
    run: PlannedRun


@dataclass(frozen=True)
class Worker:
    """Where a Ray backend runs a cell: its worker's host and process."""
    host: str
    pid: int


@dataclass(frozen=True)
class RunStarted:
    run: PlannedRun
    resumed: bool                          # continues from the checkpoint of an interrupted sweep
    worker: Worker | None = None           # None: this process (the local backend)


@dataclass(frozen=True)
class RunProgress:
    """One search event of the run. When ``event`` is ``Finished``, the run file is already written."""
    run: PlannedRun
    event: Event


@dataclass(frozen=True)
class RunDone:
    run: PlannedRun
    row: LibraryRow                        # read back from the written run file
    seconds: float                         # wall time of this run in this sweep (without time before a resume)


@dataclass(frozen=True)
class RunMovedAside:
    """The file at the run's name was damaged (``reason``): it now lies at ``moved_to`` and the run
    is searched again."""
    run: PlannedRun
    moved_to: Path
    reason: str


@dataclass(frozen=True)
class RunFailed:
    """The run raised (bad data, out of memory, its worker died more often than retried), or the file
    at its name cannot be read now and is left as it is; both backends report it and go on with the
    rest of the grid."""
    run: PlannedRun
    error: str


@dataclass(frozen=True)
class SweepFinished:
    rows: tuple[LibraryRow, ...]           # every run of the sweep, in sweep order, skipped ones included
    seconds: float


SweepEvent = SweepStarted | RunSkipped | RunMovedAside | RunStarted | RunProgress | RunDone | RunFailed | SweepFinished


# ---------------------------------------------------------------- runner

def _resumable(checkpoint: Path, identity: dict[str, Any]) -> bool:
    """True when an interrupted run's checkpoint loads and holds this run's identity. A stale one
    (another sweep into the same folder) or a damaged one is only partial work: start afresh."""
    if not checkpoint.exists():
        return False
    try:
        saved = load_checkpoint(checkpoint)
    except ValueError as exc:
        log.warning("%s; the run starts afresh", exc)
        return False
    problem = identity_mismatch(saved_identity(saved.identity), identity, str(checkpoint))
    if problem:
        log.warning("%s was made with other settings (%s); the run starts afresh", checkpoint, problem)
        return False
    return True


def settle(run: PlannedRun) -> Iterator[SweepEvent]:
    """What both backends do with a run before searching it: skip it (done), fail it (its file cannot
    be read now, and stays untouched), or move its damaged file aside (and then search it)."""
    if run.done:
        yield RunSkipped(run)
    elif run.blocked:
        yield RunFailed(run, f"{run.blocked}; the file is left as it is")
    elif run.damaged:
        moved_to = moved_aside_name(run.path)
        run.path.rename(moved_to)
        log.warning("%s could not be read (%s); moved aside to %s, and its run is made again", run.path,
                    run.damaged, moved_to.name)
        yield RunMovedAside(run, moved_to, run.damaged)


def needs_search(run: PlannedRun) -> bool:
    return not (run.done or run.blocked)


def run_progress(run: PlannedRun, event: Event) -> RunProgress:
    """One search event of ``run``, as both backends pass it on. A Finished run is saved before the
    event goes out, so a consumer that stops at Finished keeps the run."""
    if isinstance(event, Finished):
        save_run(run.path, event.run)
        run.checkpoint.unlink(missing_ok=True)
    return RunProgress(run, event)


def run_done(run: PlannedRun, finished: bool, start: float) -> RunDone:
    """The end of ``run``'s search events: its row, read back from the file ``run_progress`` wrote."""
    if not finished:
        raise RuntimeError(f"the search of {run.label} ended without a result")
    return RunDone(run, read_row(run.path), time.perf_counter() - start)


def _run_one(run: PlannedRun, config: SearchConfig, search_fn: SearchFn) -> Iterator[SweepEvent]:
    resume = run.checkpoint if _resumable(run.checkpoint, run.identity) else None
    yield RunStarted(run, resumed=resume is not None)
    start = time.perf_counter()
    finished = False
    with closing(search_fn(run.spec, config, checkpoint=run.checkpoint, resume=resume)) as events:
        for event in events:
            finished = finished or isinstance(event, Finished)
            yield run_progress(run, event)
    yield run_done(run, finished, start)


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_local(runs: list[PlannedRun], config: SearchConfig, search_fn: SearchFn) -> Iterator[SweepEvent]:
    """Every run in turn, in this process; a run that raises is a failed row and the grid goes on."""
    for run in runs:
        try:
            yield from settle(run)
            if needs_search(run):
                yield from _run_one(run, config, search_fn)
        except Exception as exc:  # noqa: BLE001 - any cell's failure is reported, as on Ray
            log.warning("%s failed: %s", run.label, _failure(exc))
            yield RunFailed(run, _failure(exc))


def run_sweep(grid: SweepGrid, base: RunSpec, config: SearchConfig, workspace: str | Path,
              search_fn: SearchFn | None = None, backend: str = "local", address: str | None = None,
              resources: "CellResources | None" = None) -> Iterator[SweepEvent]:
    """Plan, then search every unfinished run. Stop by closing the generator; calling again with the
    same arguments resumes. ``search_fn`` replaces ``run_search`` (the app and tests wrap it).

    ``backend="ray"`` runs the cells as Ray tasks (``engine.sweep_ray``) on the cluster at ``address``
    (None: the one ``RAY_ADDRESS`` names, else a new local one; "auto": the one started on this
    machine; "ray://host:port") with ``resources`` per cell; the events of cells that run at the same
    time interleave, each tagged with its run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sweep backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "local" and (address is not None or resources is not None):
        raise ValueError("an address and per-run resources are for the ray backend (--backend ray)")
    threads = None
    if backend == "ray":
        from .sweep_ray import CellResources, load_ray, run_cells
        load_ray()   # a missing extra fails before the weights are hashed
        threads = (resources or CellResources()).threads
    search_fn = search_fn or search_run.run_search
    start = time.perf_counter()
    Path(workspace).mkdir(parents=True, exist_ok=True)
    runs = plan_sweep(grid, base, config, workspace, threads)
    yield SweepStarted(tuple(runs))
    if backend == "ray":
        events = run_cells(runs, config, search_fn, address, resources)
    else:
        events = _run_local(runs, config, search_fn)
    failed: dict[int, LibraryRow] = {}
    with closing(events):
        for event in events:
            if isinstance(event, RunFailed):
                failed[event.run.index] = LibraryRow(file=event.run.path.name, error=event.error)
            yield event
    rows = tuple(failed.get(run.index) or read_row(run.path) for run in runs)
    yield SweepFinished(rows, time.perf_counter() - start)


def describe(event: Any) -> str | None:
    """The one progress line of a sweep event worth a line (None for the search's own events)."""
    if isinstance(event, RunSkipped):
        return f"[{event.run.index}/{event.run.total}] {event.run.label}: done already -> {event.run.path.name}"
    if isinstance(event, RunStarted):
        how = "resuming from its checkpoint" if event.resumed else "searching"
        where = f" on {event.worker.host} (pid {event.worker.pid})" if event.worker else ""
        return f"[{event.run.index}/{event.run.total}] {event.run.label}: {how}{where}"
    if isinstance(event, RunMovedAside):
        return (f"[{event.run.index}/{event.run.total}] {event.run.label}: {event.run.path.name} was unreadable "
                f"({event.reason}); moved aside to {event.moved_to.name}, searching again")
    if isinstance(event, RunFailed):
        return f"[{event.run.index}/{event.run.total}] {event.run.label}: failed: {event.error}"
    if isinstance(event, RunDone):
        row = event.row
        if not row.ok:
            return f"[{event.run.index}/{event.run.total}] {event.run.label}: written but unreadable: {row.error}"
        return (f"[{event.run.index}/{event.run.total}] {event.run.label}: base {row.base_top1:.2f}%  "
                f"refined {row.refined_top1:.2f}% ({row.delta:+.2f})  {row.evaluations} evaluations  "
                f"{event.seconds:.1f} s -> {row.file}")
    if isinstance(event, SweepFinished):
        failed = [row.file for row in event.rows if not row.ok]
        summary = f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""
        return f"sweep finished: {len(event.rows)} runs in {event.seconds:.1f} s{summary}"
    return None

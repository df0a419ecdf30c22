"""The run library: a workspace folder of run files, one flat table row per file.

The GUI's library table is a thin view over ``scan_workspace``; servers get the same rows from
``python -m engine compare --dir``. A row holds plain values only (str/int/float/None), so it sorts,
filters, serialises to JSON and exports to CSV without knowing RunRecords. A file that does not
load becomes a row with ``error`` set: one bad file must never hide the others.
"""
from __future__ import annotations

import csv
import logging
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py

from ..atomic import atomic_path
from ..plan.summary import bits_label, plan_text, recorded_mean_bits
from ..provenance import describe as describe_provenance
from ..runrecord import RunRecord
from ..scalefile import load_run

log = logging.getLogger(__name__)

RUN_SUFFIXES = (".h5", ".hdf5")
MOVED_ASIDE = re.compile(r"\.unreadable-\d+$")   # a sweep's name for a damaged run file it replaced


def moved_aside_name(path: Path) -> Path:
    """``NAME.unreadable-N.h5`` beside ``path``, with the first N not taken."""
    n = 1
    while (candidate := path.with_name(f"{path.stem}.unreadable-{n}{path.suffix}")).exists():
        n += 1
    return candidate


@dataclass(frozen=True)
class LibraryRow:
    """One run file as the library shows it. Accuracies are top-1 in percent on the test split."""
    file: str                           # name inside the workspace folder
    model: str | None = None
    quantizer: str | None = None
    bits: str | None = None             # e.g. "W4A8", "W4A8/attn6", or a mixed plan's mean bits "W3.98A3.00 (plan)"
    w_bits: int | None = None           # numeric, so bit-widths sort as numbers, not labels (a plan's base widths)
    a_bits: int | None = None
    plan: str | None = None             # a mixed plan's points off its base widths (summary.plan_text); None: uniform
    seed: int | None = None
    preset: str | None = None           # None for a plain quantize (no search)
    fp_top1: float | None = None
    base_top1: float | None = None
    refined_top1: float | None = None
    delta: float | None = None          # refined - base, in points
    evaluations: int | None = None
    seconds: float | None = None        # search time
    date: str | None = None             # the file's ``created`` attribute (ISO 8601, UTC)
    computed: str | None = None         # how: version, device, threads (provenance.describe)
    error: str | None = None            # why the file could not be read; every other field is then None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LibraryRow))


def _number(value: Any) -> float | None:
    """Metrics are optional (a quantize-only file has no refined top-1): missing or empty -> None."""
    return None if value is None or value == "" else float(value)


def row_from_record(file: str, record: RunRecord, date: str | None = None) -> LibraryRow:
    """The library row of a loaded run (pure: no file access)."""
    metrics = record.metrics
    base, refined = _number(metrics.get("base_top1")), _number(metrics.get("refined_top1"))
    evaluations = _number(metrics.get("evaluations"))
    return LibraryRow(
        file=file, model=record.model_name, quantizer=record.quant.quantizer,
        bits=bits_label(record.quant, recorded_mean_bits(metrics, record.planning)),
        w_bits=record.quant.w_bits, a_bits=record.quant.a_bits, plan=plan_text(record.quant), seed=record.seed,
        preset=(record.search or {}).get("preset"), fp_top1=_number(metrics.get("fp_top1")),
        base_top1=base, refined_top1=refined,
        delta=refined - base if refined is not None and base is not None else None,
        evaluations=int(evaluations) if evaluations is not None else None,
        seconds=_number(metrics.get("search_seconds")), date=date,
        computed=describe_provenance(record.provenance) if record.provenance else None,
    )


def _created(path: Path) -> str | None:
    """The run file's creation stamp (root attribute); RunRecord does not carry it."""
    with h5py.File(path, "r") as f:
        value = f.attrs.get("created")
    return value.decode() if isinstance(value, bytes) else value


def read_row(path: str | Path) -> LibraryRow:
    """The row of one run file; any failure to read it becomes the row's ``error``."""
    path = Path(path)
    try:
        return row_from_record(path.name, load_run(path), _created(path))
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes on disk; a bad file must not break the table
        log.warning("unreadable run file %s: %s", path, exc)
        error = str(exc) or type(exc).__name__
        if MOVED_ASIDE.search(path.stem):
            error = f"moved aside by a sweep, which ran its run again: {error}"
        return LibraryRow(file=path.name, error=error)


def run_files(folder: str | Path) -> list[Path]:
    """Run files directly in ``folder`` (not its subfolders, where sweeps keep checkpoints), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"workspace folder not found: {folder}")
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in RUN_SUFFIXES and p.is_file() and not p.name.startswith("."))


def scan_workspace(folder: str | Path) -> list[LibraryRow]:
    """Every run file of the workspace as a row, readable or not, sorted by file name."""
    return [read_row(path) for path in run_files(folder)]


def write_csv(rows: Iterable[Mapping[str, Any] | LibraryRow], path: str | Path,
              columns: Sequence[str] | None = None) -> Path:
    """Rows (library rows or any flat dicts, e.g. a plot's data) as CSV; None becomes an empty cell.

    Floats are written with ``repr`` precision, so a re-read value equals the run file's.
    """
    dicts = [row.to_dict() if isinstance(row, LibraryRow) else dict(row) for row in rows]
    if columns is None:
        columns = list(dicts[0]) if dicts else COLUMNS
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in d.items()} for d in dicts)
    return path

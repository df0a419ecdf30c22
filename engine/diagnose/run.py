"""The whole diagnosis as a generator of events: the one path the CLI (``diagnose``) and the app share.

For every quantization point and every set of scales (a search run's base and refined, or a fresh
calibration): SQNR, then the one-at-a-time sweeps (only the point quantized, only it in FP), scored
by the search's own fitness on the calibration images and by held-out top-1. Then the what-if:
the most sensitive points raised to more bits against random ones. The test split is never read.

Consumers pause by not pulling the next event and stop with ``generator.close()`` (the model is
private to the generator, so nothing outside sees its intermediate states).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from typing import Any, Generator, Iterator, TypeVar

import numpy as np
import torch

from ..data import Splits, TensorImages, calibration_batches, first_images, materialize
from ..evaluate import top1
from ..events import Stage
from ..models import ModelInfo, create_model
from ..pipeline import RunSpec, prepare
from ..quant import QuantConfig, QuantizedModel, ScaleSet, quantize
from ..rebuild import rebuild, recorded_spec
from ..runrecord import RunRecord
from ..search.config import PRESETS, SearchConfig
from ..search.evaluator import search_fitness
from ..search.segments import model_segments
from .events import Diagnosed, MeasureCounter, Measured
from .points import Point, quantization_points
from .probe import Probe
from .result import Diagnosis, PointTable
from .sensitivity import ISOLATED, LEFT_OUT, MODES, sweep
from .sqnr import point_sqnr
from .whatif import DEFAULT_DRAWS, DEFAULT_K, check_k, raisable, what_if

log = logging.getLogger(__name__)

# The fitness loss on the first 256 calibration images: each point is measured twice per set of scales,
# so the images dominate the cost; the what-if checks the ranking against held-out top-1.
DEFAULT_IMAGES = 256
WHATIF_STREAM = 0xD1A6   # the what-if's random draws: independent of the calibration draw of the same seed
MODE_LABELS = {ISOLATED: "only {} quantized", LEFT_OUT: "all but {} quantized"}

Event = Stage | Measured | Diagnosed
T = TypeVar("T")


@dataclass(frozen=True)
class DiagnoseConfig:
    raise_k: tuple[int, ...] = DEFAULT_K    # what-if point counts; () skips the what-if
    to_bits: int = 8
    draws: int = DEFAULT_DRAWS              # random draws per K
    images: int | None = DEFAULT_IMAGES     # the first N calibration images score the fitness loss; None: all
    heldout_images: int | None = None       # the first N held-out images score top-1; None: all

    def __post_init__(self) -> None:
        if any(k < 1 for k in self.raise_k):
            raise ValueError(f"--raise needs point counts of at least 1, got {list(self.raise_k)}")
        object.__setattr__(self, "raise_k", tuple(sorted(set(self.raise_k))))
        if not 2 <= self.to_bits <= 16:
            raise ValueError(f"--to must be a bit-width from 2 to 16, got {self.to_bits}")
        if self.draws < 1:
            raise ValueError(f"random draws must be at least 1, got {self.draws}")
        for name in ("images", "heldout_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass
class Subject:
    """What is diagnosed: a quantized model, its data and the named sets of scales to compare."""
    qmodel: QuantizedModel
    info: ModelInfo
    splits: Splits
    device: torch.device
    spec: RunSpec
    calib: list[torch.Tensor]
    scales: dict[str, ScaleSet]     # in order: base before refined
    source: str                     # the run file, or "calibrated"
    fitness: SearchConfig           # whose loss, temperature, features and images score a configuration


def fitness_of(search: dict[str, Any] | None) -> SearchConfig:
    """The fitness a run was searched with (its SearchConfig's known fields); the default's otherwise."""
    if not search:
        return PRESETS["default"]
    known = {f.name for f in fields(SearchConfig)}
    return SearchConfig.from_dict({k: v for k, v in search.items() if k in known})


def diagnose_run(record: RunRecord, config: DiagnoseConfig, source: str, data: str | None = None,
                 device: str | None = None) -> Iterator[Event]:
    """Diagnose a run file's scales (base and refined for a search run) on the run's own model and data
    (``data`` and ``device`` override where the data lies and where to run)."""
    spec = recorded_spec(record, data, device)
    yield Stage(f"rebuilding {record.model_name} {record.quant.quantizer} {record.quant.bits_label} from {source}")
    rebuilt = rebuild(record, spec)
    calib = calibration_batches(rebuilt.splits, spec.batch_size, rebuilt.device)
    scales = {"base": record.base, "refined": record.scales} if record.base is not None else {
        "calibrated": record.scales}
    yield from diagnose_subject(Subject(rebuilt.qmodel, rebuilt.info, rebuilt.splits, rebuilt.device, spec, calib,
                                        scales, source, fitness_of(record.search)), config)


def diagnose_calibrated(spec: RunSpec, config: DiagnoseConfig, fitness: SearchConfig = PRESETS["default"]
                        ) -> Iterator[Event]:
    """Calibrate ``spec``'s quantizer, then diagnose its scales with ``fitness``'s loss."""
    yield Stage(f"loading {spec.model} and calibrating {spec.quant.quantizer} {spec.quant.bits_label}")
    prepared = prepare(spec)
    yield from diagnose_subject(Subject(prepared.qmodel, prepared.info, prepared.splits, prepared.device, spec,
                                        prepared.calib, {"calibrated": prepared.qmodel.scale_set()}, "calibrated",
                                        fitness), config)


def raised_scales(subject: Subject, to_bits: int) -> ScaleSet:
    """Every point's parameters as the same quantizer calibrates them at ``to_bits`` (weights,
    activations and attention), on the same calibration images, in a fresh copy of the FP model."""
    spec = subject.spec
    model, _ = create_model(spec.model, weights=spec.weights, pretrained=spec.pretrained)
    quant = QuantConfig(subject.qmodel.config.quantizer, to_bits, to_bits)
    return quantize(model.to(subject.device).eval(), quant, subject.calib).scale_set()


def _first(images: TensorImages, limit: int | None) -> TensorImages:
    if limit is None or limit >= len(images):
        return images
    return TensorImages(images.images[:limit], images.labels[:limit], images.originals[:limit])


def _measure_scales(qmodel: QuantizedModel, probe: Probe, points: list[Point], name: str, counter: MeasureCounter
                    ) -> Generator[Measured, None, PointTable]:
    """SQNR and both one-at-a-time sweeps of the scales loaded in ``qmodel``, then every point quantized."""
    n = len(points)
    sqnr = point_sqnr(qmodel, points, probe.images[:probe.n_calib])
    yield counter.step(f"{name}: SQNR of {n} points")
    sweeps = {}
    for mode in MODES:
        loss, acc = np.zeros(n), np.zeros(n)
        for index, score in sweep(qmodel, probe, points, mode):
            loss[index], acc[index] = score.loss, score.top1
            yield counter.step(f"{name}: {MODE_LABELS[mode].format(points[index].name)}")
        sweeps[mode] = (loss, acc)
    everything = probe.score_from_images()
    yield counter.step(f"{name}: every point quantized")
    (loss_only, top1_only), (loss_without, top1_without) = sweeps[ISOLATED], sweeps[LEFT_OUT]
    return PointTable(name, sqnr, loss_only, top1_only, loss_without, top1_without, everything.loss, everything.top1)


def _counted(labels: Generator[str, None, T], counter: MeasureCounter, prefix: str) -> Generator[Measured, None, T]:
    """Relay a measuring generator's labels as numbered Measured events; return its result."""
    while True:
        try:
            label = next(labels)
        except StopIteration as finished:
            return finished.value
        yield counter.step(prefix + label)


def diagnose_subject(subject: Subject, config: DiagnoseConfig) -> Iterator[Event]:
    """The diagnosis of an already loaded subject; yields Stage, Measured and finally Diagnosed."""
    start = time.perf_counter()
    qmodel, spec, device = subject.qmodel, subject.spec, subject.device
    points = quantization_points(qmodel)
    segments = model_segments(qmodel.model)
    limits = [n for n in (config.images, subject.fitness.search_images) if n is not None]
    images = first_images(subject.calib, min(limits) if limits else None)
    yield Stage(f"computing the FP reference on {sum(len(x) for x in images)} calibration images")
    fitness = search_fitness(qmodel, segments, images, subject.fitness)
    heldout = _first(materialize(subject.splits.heldout, spec.batch_size, device), config.heldout_images)
    probe = Probe(segments, fitness, images, heldout, spec.batch_size, device)
    with qmodel.full_precision():
        fp_top1 = top1(qmodel, heldout, spec.batch_size, device).top1
    if config.raise_k:   # before the sweeps, so a K too large fails in seconds
        check_k(config.raise_k, len(raisable(list(subject.scales.values())[-1], points, config.to_bits)),
                config.to_bits)
    n_whatif = len(config.raise_k) * (1 + config.draws)
    counter = MeasureCounter(len(subject.scales) * (2 + 2 * len(points)) + n_whatif)
    tables: dict[str, PointTable] = {}
    for name, scales in subject.scales.items():
        qmodel.load_scale_set(scales)
        tables[name] = yield from _measure_scales(qmodel, probe, points, name, counter)
    whatif = None
    if config.raise_k:
        yield Stage(f"calibrating {qmodel.config.quantizer} at {config.to_bits} bits for the what-if")
        raised = raised_scales(subject, config.to_bits)
        ranked_by = list(tables)[-1]
        table = tables[ranked_by]
        measuring = what_if(qmodel, subject.scales[ranked_by], raised, points, table.ranking(), config.raise_k,
                            config.draws, np.random.default_rng([WHATIF_STREAM, spec.seed]),
                            lambda: top1(qmodel, heldout, spec.batch_size, device).top1,
                            config.to_bits, ranked_by, table.top1_all)
        whatif = yield from _counted(measuring, counter, "what-if: ")
    seconds = time.perf_counter() - start
    log.info("diagnosed %d points x %d set(s) of scales in %.1f s", len(points), len(tables), seconds)
    yield Diagnosed(Diagnosis(
        model_name=subject.info.name, quantizer=qmodel.config.quantizer, bits=qmodel.config.bits_label,
        source=subject.source, points=tuple(points), n_blocks=len(segments.blocks), fp_top1=fp_top1,
        n_calibration=sum(len(x) for x in images), n_heldout=len(heldout),
        fitness={"loss": subject.fitness.loss, "temperature": subject.fitness.temperature,
                 "features": subject.fitness.features},
        tables=tables, whatif=whatif, seconds=seconds))

"""The whole CPT-V search as a generator of events (DESIGN §2, §4).

``run_search`` prepares the model (pipeline.prepare), then ``search_prepared`` runs the search:
blocks last to first, ``passes`` times; after every block step the held-out top-1 is measured (for a
model without a classifier: the feature cosine to the FP model, evaluate.py's "quality"), the
selection rule is updated and a checkpoint may be written. The test split is read once, after the
last step, for the final report.

Consumers pause by not pulling the next event and stop with ``generator.close()``; no lock is
held across a ``yield`` and the search time excludes the time spent outside the generator.
"""
from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Generator, Iterator

import numpy as np
import torch

from ..data import TensorImages, first_images, materialize
from ..errors import CheckpointError
from ..evaluate import TOP1, quality_for, quality_key, quality_variants, top1
from ..pipeline import Prepared, RunSpec, prepare
from ..plan.elements import mean_bits_metrics
from ..provenance import provenance
from ..quant import QuantizedModel, ScaleSet
from ..runrecord import RunRecord, identity_mismatch, spec_values
from .checkpoint import SearchState, load_checkpoint, save_checkpoint
from .config import GUIDED, SearchConfig
from .cma_es import cmaes_block
from .compiled import evaluation_forwards
from .evaluator import CachedEvaluator, mean_over_batches, search_fitness
from .events import BlockDone, Evaluated, Event, Finished, PassDone, Stage, Started
from .evolution import evolve_block
from .guided import guided_block
from .identity import saved_identity, search_run_identity, thread_dependence
from .joint import checking_batches, joint_phase, moved
from .resume import check_before_work
from .segments import model_segments
from .space import BlockSpace, block_space, planned_ranges
from .steps import BlockResult, EvolutionParams, Step
from .vector import SearchedVector, searched_vector

log = logging.getLogger(__name__)

SEARCH_STREAM = 0xC977  # the search's RNG stream: independent of the calibration draw of the same seed


class Stopwatch:
    """Search time without the consumer's pauses: stopped around every yield."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds, self._since = seconds, time.perf_counter()

    def read(self) -> float:
        return self.seconds + time.perf_counter() - self._since

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.seconds += time.perf_counter() - self._since
        try:
            yield
        finally:
            self._since = time.perf_counter()


def run_search(spec: RunSpec, config: SearchConfig, checkpoint: Path | None = None,
               resume: Path | None = None) -> Iterator[Event]:
    """Prepare ``spec`` (load, calibrate) then search; see ``search_prepared``. A ``resume`` checkpoint
    of another run is refused before any work."""
    if resume is not None:
        check_before_work(load_checkpoint(resume), Path(resume), spec, config)
    yield Stage(f"loading {spec.model} and calibrating {spec.quant.quantizer} {spec.quant.bits_label}")
    yield from search_prepared(prepare(spec), config, checkpoint, resume)


def schedule(passes: int, n_blocks: int) -> list[tuple[int, int]]:
    """(pass, block) of every block step: blocks last to first, ``passes`` times."""
    return [(p, b) for p in range(passes) for b in reversed(range(n_blocks))]


def scales_fingerprint(scales: ScaleSet) -> str:
    """sha256 over every point's name, scale and zero-point: a resume must start from the same base."""
    digest = hashlib.sha256()
    for name, role, params in scales.points():
        digest.update(f"{name}/{role}".encode())
        digest.update(np.ascontiguousarray(params.scale).tobytes())
        digest.update(np.ascontiguousarray(params.zero_point).tobytes())
    return digest.hexdigest()


def _identity(prepared: Prepared, config: SearchConfig, base: ScaleSet, computed: dict) -> dict:
    """The run's identity (identity.py's rule) and its base scales' fingerprint."""
    identity = search_run_identity(spec_values(prepared.spec), config.to_dict(), prepared.info.weights_sha256)
    return {**identity, **thread_dependence(computed), "base_sha256": scales_fingerprint(base)}


def _check_identity(saved: dict, expected: dict, path: Path) -> None:
    problem = identity_mismatch(saved_identity(saved), expected, f"checkpoint {path}")
    if problem:
        raise CheckpointError(f"checkpoint {path} belongs to another run ({problem}); "
                         "resume with the same model, weights, data, quantizer, seed and search options")


def _selection_score(config: SearchConfig, loss: float, heldout: float) -> float:
    """Higher is better; ``last`` always takes the newest step."""
    if config.select == "best-loss":
        return -loss
    if config.select == "best-heldout":
        return heldout
    return float("inf")


def _record_step(state: SearchState, config: SearchConfig, pass_index: int, block_index: int, heldout: float) -> None:
    state.step += 1
    state.step_heldout.append(heldout)
    state.step_loss.append(state.current_loss)
    state.step_block.append(block_index)
    state.step_pass.append(pass_index)
    score = _selection_score(config, state.current_loss, heldout)
    if config.select == "last" or score > state.selected_score:   # ties keep the earlier step
        state.selected_step, state.selected_score = state.step, score
        state.selected_vectors = [v.copy() for v in state.vectors] if config.select != "last" else []


def _evolution_params(config: SearchConfig, space: BlockSpace, vector: SearchedVector, prepared: Prepared,
                      cycles: int) -> EvolutionParams:
    ranges = planned_ranges(space, prepared.qmodel.config, config.resolved_ranges)   # per point's bits
    return EvolutionParams(config.population, config.tournament, cycles, config.children, config.strategy,
                           config.mutation, vector.ranges(ranges), config.direction)


def _strategy_block_step(config: SearchConfig, evaluator: CachedEvaluator, block_index: int, space: BlockSpace,
                         vector: SearchedVector, loss: float, params: EvolutionParams,
                         rng: np.random.Generator) -> Generator[Step, None, BlockResult]:
    """One block step of the configured strategy over the searched vector's coordinates: yields a Step per
    candidate and returns a BlockResult holding the block's scales (``_relay_block_step`` runs it)."""
    def evaluate(coordinates: np.ndarray) -> np.ndarray:
        return evaluator.evaluate(block_index, space, vector.expand(coordinates))

    if config.strategy in GUIDED:
        def gradient(coordinates: np.ndarray) -> np.ndarray:
            scales = vector.expand(coordinates[None])[0]
            return vector.log_gradient(evaluator.log_gradient(block_index, space, scales, config.gradient_images))

        def evaluate_halves(coordinates: np.ndarray) -> np.ndarray:
            """(K, 2): each candidate's loss, and its loss on the checking half (the odd batches)."""
            per_batch = evaluator.batch_losses(block_index, space, vector.expand(coordinates))
            return np.stack([mean_over_batches(per_batch), mean_over_batches(per_batch[:, checking_batches(per_batch)])], 1)

        halves = config.acceptance == "both-halves"
        result = yield from guided_block(vector.start(), loss, evaluate_halves if halves else evaluate, gradient, params,
                                         rng, vector.groups(), check=evaluate_halves if halves else None)
    else:
        step = cmaes_block if config.strategy == "cmaes" else evolve_block
        result = yield from step(vector.start(), loss, evaluate, params, rng)
    return BlockResult(vector.expand(result.vector[None])[0], result.loss, result.population_losses)


def _heldout_quality(prepared: Prepared, heldout: TensorImages, with_fp: bool = False) -> dict[str, float]:
    """The run's quality (``quality_for``) of the model as it stands (``model``) and, ``with_fp``, of the
    FP model (``fp``). Top-1 reads the held-out images once per variant asked for; feature cosine
    always runs the FP model too (its features are the reference)."""
    qmodel, batch, device = prepared.qmodel, prepared.spec.batch_size, prepared.device
    quality = quality_for(prepared.info.num_classes)
    if quality == TOP1 and not with_fp:
        return {"model": top1(qmodel, heldout, batch, device).top1}
    measured = quality_variants(qmodel, heldout, quality, qmodel.full_precision, {"model": nullcontext}, batch, device)
    return {name: value.top1 for name, value in measured.items()}


def _fresh_state(prepared: Prepared, config: SearchConfig, spaces: list[BlockSpace], heldout: TensorImages,
                 evaluator: CachedEvaluator, rng: np.random.Generator) -> SearchState:
    qmodel = prepared.qmodel
    measured = _heldout_quality(prepared, heldout, with_fp=True)
    heldout_fp, heldout_base = measured["fp"], measured["model"]
    vectors = [space.read(qmodel) for space in spaces]
    evaluator.begin_pass()
    base_loss = float(evaluator.evaluate(len(spaces) - 1, spaces[-1], vectors[-1][None])[0])
    state = SearchState(vectors=vectors, rng_state=rng.bit_generator.state, base_loss=base_loss,
                        heldout_fp_top1=heldout_fp, heldout_base_top1=heldout_base, current_loss=base_loss)
    state.selected_score = _selection_score(config, base_loss, heldout_base)
    state.eval_loss.append(base_loss)
    state.eval_pass.append(-1)   # the base evaluation belongs to no pass or block
    state.eval_block.append(-1)
    return state


def _relay_block_step(state: SearchState, block_step: Generator[Step, None, BlockResult], pass_index: int,
                      block_index: int, watch: Stopwatch) -> Generator[Evaluated, None, BlockResult]:
    """Run one block step to its end, relaying each candidate as an Evaluated event (recorded in the
    history); returns the step's BlockResult."""
    while True:
        try:
            child = next(block_step)
        except StopIteration as done:
            return done.value
        state.evaluations += 1
        state.eval_loss.append(child.loss)
        state.eval_pass.append(pass_index)
        state.eval_block.append(block_index)
        with watch.paused():
            yield Evaluated(evaluation=state.evaluations, pass_index=pass_index, block_index=block_index,
                            cycle=child.cycle, loss=child.loss, best_loss=float(child.population_losses.min()),
                            population_losses=child.population_losses)


def search_prepared(prepared: Prepared, config: SearchConfig, checkpoint: Path | None = None,
                    resume: Path | None = None) -> Iterator[Event]:
    """The search on an already prepared model; yields Stage, Started, Evaluated, BlockDone,
    PassDone and finally Finished(run=RunRecord)."""
    qmodel, spec = prepared.qmodel, prepared.spec
    segments = model_segments(qmodel.model)
    names = [name for name, _ in qmodel.blocks()]
    spaces = [block_space(qmodel, name, config.scope) for name in names]
    base = qmodel.scale_set()
    computed = provenance(prepared.device, spec.compile)
    identity = _identity(prepared, config, base, computed)
    yield Stage("computing the FP reference on the calibration images")
    images = first_images(prepared.calib, config.search_images)
    evaluator = CachedEvaluator(qmodel, segments, images, search_fitness(qmodel, segments, images, config),
                                forwards=evaluation_forwards(qmodel, segments, spec.compile, images[0]))
    heldout = materialize(prepared.splits.heldout, spec.batch_size, prepared.device)   # read after every step
    rng = np.random.default_rng([SEARCH_STREAM, spec.seed])
    if resume is not None:
        saved = load_checkpoint(resume)
        _check_identity(saved.identity, identity, Path(resume))
        state = saved.state
        rng.bit_generator.state = state.rng_state
        for space, vector in zip(spaces, state.vectors):
            space.write(qmodel, vector)
        log.info("resuming %s after block step %d", resume, state.step)
    else:
        yield Stage("measuring the base on the held-out split")
        state = _fresh_state(prepared, config, spaces, heldout, evaluator, rng)
    watch = Stopwatch(state.seconds)

    def save() -> None:
        state.rng_state = rng.bit_generator.state
        state.seconds = watch.read()
        if checkpoint is not None:
            save_checkpoint(checkpoint, state, identity, spec.to_dict(), config.to_dict(), computed)

    if config.joint and not state.joint_done:
        yield from _joint(prepared, config, spaces, images, evaluator, state, heldout, rng, watch, save)
    with watch.paused():
        yield Started(block_names=tuple(names), passes=config.passes,
                      total_evaluations=config.evaluations(len(spaces)), heldout_fp_top1=state.heldout_fp_top1,
                      heldout_base_top1=state.heldout_base_top1, base_loss=state.base_loss,
                      device=str(prepared.device), resumed_from_step=state.step,
                      evaluations_done=state.evaluations, quality=quality_for(prepared.info.num_classes))
    steps = schedule(config.passes, len(spaces))
    cycles = config.cycles_for(len(spaces))
    cached_pass = 0 if resume is None else None   # block inputs stay valid for a whole pass
    for pass_index, block_index in steps[state.step:]:
        if cached_pass != pass_index:
            evaluator.begin_pass()
            cached_pass = pass_index
        space = spaces[block_index]
        vector = searched_vector(config.vector, space, state.vectors[block_index])
        params = _evolution_params(config, space, vector, prepared, cycles)
        block_step = _strategy_block_step(config, evaluator, block_index, space, vector, state.current_loss, params,
                                          rng)
        result = yield from _relay_block_step(state, block_step, pass_index, block_index, watch)
        space.write(qmodel, result.vector)
        state.vectors[block_index] = result.vector
        state.current_loss = result.loss
        heldout_top1 = _heldout_quality(prepared, heldout)["model"]   # top-1, or feature cosine (headless)
        _record_step(state, config, pass_index, block_index, heldout_top1)
        save()
        with watch.paused():
            yield BlockDone(step=state.step, pass_index=pass_index, block_index=block_index, best_loss=result.loss,
                            heldout_top1=heldout_top1, evaluations=state.evaluations)
            if block_index == 0:
                yield PassDone(pass_index=pass_index, best_loss=state.current_loss)
    seconds = watch.read()
    yield Stage("final report: reading the test split")
    yield Finished(run=_final_record(prepared, config, spaces, base, state, seconds, computed))


def _joint(prepared: Prepared, config: SearchConfig, spaces: list[BlockSpace], images: list[torch.Tensor],
           evaluator: CachedEvaluator, state: SearchState, heldout: TensorImages, rng: np.random.Generator,
           watch: Stopwatch, save: Callable[[], None]) -> Iterator[Stage]:
    """The joint phase (joint.py) before the first block step, or what is left of it in a resumed run;
    ``save()`` checkpoints the state at each of its checks and once it is done. Its result is kept only if
    the exact fitness on all calibration images is lower (a measurement of the phase, not one of the
    search's candidate evaluations)."""
    null = config.strategy == "guided-null"
    ranges = [planned_ranges(space, prepared.qmodel.config, config.resolved_ranges) for space in spaces]
    phase = joint_phase(evaluator.segments, spaces, state.vectors, ranges, images, evaluator.fitness,
                        config.joint_steps, config.joint_images, rng.standard_normal if null else None, state.joint)
    while True:
        try:
            state.joint = next(phase)
        except StopIteration as done:
            result = done.value
            break
        save()
        with watch.paused():
            yield Stage(f"joint phase: step {state.joint.step} of at most {config.joint_steps}, loss "
                        f"{state.joint.check_loss:.5f} on the checking half of the calibration images")
    kept = result.moves is not None
    if kept:
        vectors = moved(state.vectors, result.moves)
        for space, vector in zip(spaces, vectors):
            space.write(prepared.qmodel, vector)
        evaluator.begin_pass()
        loss = float(evaluator.evaluate(len(spaces) - 1, spaces[-1], vectors[-1][None])[0])
        kept = loss < state.current_loss
        if kept:
            state.vectors, state.current_loss = vectors, loss
        else:
            for space, vector in zip(spaces, state.vectors):
                space.write(prepared.qmodel, vector)
        evaluator.begin_pass()
    heldout_now = _heldout_quality(prepared, heldout)["model"] if kept else state.heldout_base_top1
    state.joint, state.joint_done = None, True
    save()
    with watch.paused():
        if kept:
            yield Stage(f"joint phase kept after {result.steps} steps: loss {state.base_loss:.5f} -> "
                        f"{state.current_loss:.5f}, held-out {state.heldout_base_top1:.2f} -> {heldout_now:.2f}")
        else:
            yield Stage(f"joint phase left the scales as they were after {result.steps} steps (no lower loss)")


class _PreloadedScales:
    """Another ScaleSet kept on the model's device, swapped in by copying, not by loading: the final
    report runs each test batch under both the base and the refined scales, and loading a ScaleSet
    builds every buffer from host memory again (and reruns load hooks, e.g. RepQ-ViT's folding)."""

    def __init__(self, qmodel: QuantizedModel, other: ScaleSet) -> None:
        own = {name: value.detach().clone() for name, value in qmodel.state_dict().items()}
        current = qmodel.scale_set()
        qmodel.load_scale_set(other)
        theirs = qmodel.state_dict()
        self.pairs = {name: (theirs[name].detach().clone(), own[name]) for name in own
                      if not torch.equal(theirs[name], own[name])}
        qmodel.load_scale_set(current)
        self.state = qmodel.state_dict(keep_vars=True)

    @contextmanager
    def applied(self) -> Iterator[None]:
        with torch.no_grad():
            for name, (theirs, _) in self.pairs.items():
                self.state[name].copy_(theirs)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, (_, own) in self.pairs.items():
                    self.state[name].copy_(own)


def _final_record(prepared: Prepared, config: SearchConfig, spaces: list[BlockSpace], base: ScaleSet,
                  state: SearchState, seconds: float, computed: dict) -> RunRecord:
    """Apply the selected step, then read the test split (once) for FP, base and refined top-1 (or
    feature cosine to the FP model, for a model without a classifier)."""
    qmodel, spec, info = prepared.qmodel, prepared.spec, prepared.info
    if config.select != "last" and state.selected_step == 0:
        qmodel.load_scale_set(base)
    else:
        for space, vector in zip(spaces, state.vectors if config.select == "last" else state.selected_vectors):
            space.write(qmodel, vector)
    refined = qmodel.scale_set()
    quality = quality_for(info.num_classes)
    variants = {"refined": nullcontext, "base": _PreloadedScales(qmodel, base).applied}
    test = quality_variants(qmodel, prepared.splits.test, quality, qmodel.full_precision, variants,
                            spec.batch_size, prepared.device)
    step = state.selected_step
    key = lambda which: quality_key(quality, which)   # noqa: E731  fp_top1, or fp_feature_cosine (headless)
    metrics = {
        "quality": quality,
        key("fp"): test["fp"].top1, key("base"): test["base"].top1, key("refined"): test["refined"].top1,
        "n_test": test["fp"].n,
        key("heldout_fp"): state.heldout_fp_top1, key("heldout_base"): state.heldout_base_top1,
        key("heldout_refined"): state.step_heldout[step - 1] if step else state.heldout_base_top1,
        "base_loss": state.base_loss, "refined_loss": state.step_loss[step - 1] if step else state.base_loss,
        "selected_step": step, "evaluations": state.evaluations, "search_seconds": seconds,
        "device": str(prepared.device), "calibration_seconds": prepared.calibration_seconds,
        **mean_bits_metrics(qmodel, prepared.calib[0]),
    }
    w_range, a_range = config.resolved_ranges(qmodel.config.w_bits, qmodel.config.a_bits)
    search = {**config.to_dict(), "resolved_mutation_range": w_range, "resolved_act_mutation_range": a_range}
    return RunRecord(model_name=info.name, model_source=info.source, weights_sha256=info.weights_sha256,
                     quant=qmodel.config, calibration=prepared.calibration_meta(), scales=refined, seed=spec.seed,
                     base=base, search=search, history=state.history(), metrics=metrics,
                     spec=spec_values(spec), provenance=computed)

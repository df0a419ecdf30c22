"""Search hyper-parameters, the named presets, the command-line flags shared by every front end, and
which of them make two searches different (``search_identity``).

Presets: ``guided`` (alias ``default``) is ours. First a joint phase (joint.py): Adam moves every
block's scales together along the straight-through gradient, early-stopped on half of the
calibration images, kept only if it lowers the loss. Then one pass block by block like the paper,
over every scale of the block (weights per channel and activation clip ranges): the gradient (on
the first ``gradient_images``) proposes each move, scaled per quantization point, and the exact
fitness keeps the best of ``children`` step sizes, only if it lowers the loss (guided.py);
label-free, it takes the last step. ``cptv-paper``
(alias ``release``) is the CPT-V release's recipe (DESIGN §4). ``null`` (alias ``random``) is the
guided search's null baseline: the same moves along random directions, with the same acceptance
rule, step adaptation, budget and selection (``guided-null``), its joint phase too (random
directions into the same Adam steps, the same early stopping and acceptance).

``evolution`` (the release's loop with relative mutation), ``cmaes``, the ``points`` /
``points+channels`` vectors and ``budget`` are options; docs/results.md has the measurements that
chose the default among them.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

SCOPE_PARTS = ("attn", "mlp", "act")
STRATEGIES = ("evolution", "guided", "cmaes", "random", "guided-null", "guided-random")
EVOLUTIONS = ("evolution", "random")                      # evolution.py: a population and tournaments
GUIDED = ("guided", "guided-null", "guided-random")      # guided.py: a direction and a step ladder
JOINT = ("guided", "guided-null")                        # joint.py: the strategies with a joint phase
# The null baseline of each steering strategy: the same moves, budget and acceptance, without the idea.
NULL_OF = {"evolution": "random", "guided": "guided-null"}
VECTORS = ("channels", "points", "points+channels")
DIRECTIONS = ("scaled", "sign")   # guided.py
MUTATIONS = ("absolute", "relative")
LOSS_NAMES = ("contrastive", "kl", "mse", "cosine")
FEATURES = ("logits", "prelogits")
SELECTIONS = ("last", "best-loss", "best-heldout")
ACCEPTANCES = ("both-halves", "loss")   # guided.py: what a kept move must lower
COMPILE_MODES = ("auto", "on", "off")

# Absolute noise U(-r, r) as in the release: r = 1e-3 at <= 4 bits, 1e-4 above.
ABSOLUTE_RANGE_LOW_BITS = 1e-3
ABSOLUTE_RANGE_HIGH_BITS = 1e-4
LOW_BITS = 4
# Relative noise scale·exp(U(-s, s)): the prototypes' sizes for weights and activations, at <= 4 bits.
RELATIVE_RANGE_WEIGHTS = 0.05
RELATIVE_RANGE_ACTIVATIONS = 0.1


def relative_range_factor(bits: int) -> float:
    """1 at <= 4 bits, halved per bit above. Scaling a b-bit grid by exp(u) moves its outermost level
    by about u·2^(b-1) steps; this keeps that move the same at every bit-width, so an 8-bit search
    perturbs as gently (in grid steps) as a 4-bit one. The release shrinks its noise tenfold at 8
    bits for the same reason."""
    return 2.0 ** -max(0, bits - LOW_BITS)


def scope_parts(scope: str) -> frozenset[str]:
    """'attn+act' -> {'attn', 'act'}; 'all' is every part. attn/mlp = weight scales of the
    attention (qkv, proj) / MLP (fc1, fc2) Linears; act = every activation scale of the block."""
    parts = frozenset(SCOPE_PARTS) if scope == "all" else frozenset(scope.split("+"))
    unknown = parts - set(SCOPE_PARTS)
    if not parts or unknown:
        raise ValueError(f"scope {scope!r}: use 'all' or parts of {'+'.join(SCOPE_PARTS)} joined by '+'")
    return parts


Used = Callable[[dict[str, Any]], bool]   # does a search with these values use the field?


def _used_by(*strategies: str) -> dict[str, Used]:
    return {"used": lambda values: values.get("strategy") in strategies}


def _option(default: Any, used: Used | None = None) -> Any:
    """A field; ``used`` says when it changes what a search computes (``search_identity``)."""
    return field(default=default, metadata={"used": used} if used else {})


@dataclass(frozen=True)
class SearchConfig:
    preset: str = _option("guided", lambda values: False)   # a name for the values below
    scope: str = "all"
    population: int = _option(15, **_used_by(*EVOLUTIONS))
    tournament: int = _option(10, **_used_by(*EVOLUTIONS))    # drawn with replacement from the population
    cycles: int = _option(8, lambda values: values.get("budget") is None)   # a budget sets them
    children: int = 4              # per cycle, evaluated in one batched pass
    passes: int = 1
    strategy: str = "guided"       # evolution, cmaes; the nulls: random (evolution's), guided-null
    vector: str = "channels"       # or "points", "points+channels" (vector.py)
    direction: str = _option("scaled", **_used_by(*GUIDED))  # or "sign" (guided.py)
    budget: int | None = None      # total evaluations; sets the cycles per block step (cycles_for)
    mutation: str = _option("relative", **_used_by(*EVOLUTIONS))   # guided and cmaes step relatively
    mutation_range: float | None = None      # weights; None = the mode's default (see resolved_ranges)
    act_mutation_range: float | None = None  # activations; likewise
    loss: str = "mse"              # chosen on held-out for the guided search (docs/results.md)
    temperature: float = _option(1.0, lambda values: values.get("loss") in ("contrastive", "kl"))
    features: str = "logits"
    select: str = "last"
    search_images: int | None = None   # the first N calibration images are the fitness's; None = all
    joint_steps: int = _option(300, **_used_by(*JOINT))   # the joint phase's most steps (joint.py)
    joint_images: int = _option(25, lambda values: values.get("strategy") in JOINT
                                and values.get("joint_steps", 0) > 0)   # images per joint step; 0 = whole batches
    gradient_images: int | None = _option(200, **_used_by("guided"))   # the gradient's first N images; None = all
    acceptance: str = _option("both-halves", **_used_by(*GUIDED))   # or "loss" (guided.py)

    def __post_init__(self) -> None:
        scope_parts(self.scope)
        for name, value, allowed in (("strategy", self.strategy, STRATEGIES), ("mutation", self.mutation, MUTATIONS),
                                     ("loss", self.loss, LOSS_NAMES), ("features", self.features, FEATURES),
                                     ("select", self.select, SELECTIONS), ("vector", self.vector, VECTORS),
                                     ("direction", self.direction, DIRECTIONS),
                                     ("acceptance", self.acceptance, ACCEPTANCES)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: choose one of {', '.join(allowed)}")
        for name in ("population", "tournament", "cycles", "children", "passes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("mutation_range", "act_mutation_range"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.mutation == "absolute" and self.strategy not in EVOLUTIONS:
            raise ValueError(f"mutation 'absolute' is for the evolution strategies ({', '.join(EVOLUTIONS)}); "
                             f"{self.strategy} steps each scale by a factor (relative)")
        if self.strategy == "cmaes" and self.children < 2:
            raise ValueError("cmaes needs at least 2 children per cycle (its generation size)")
        if self.budget is not None and self.budget < 2:
            raise ValueError(f"budget must be at least 2 evaluations, got {self.budget}")
        for name in ("search_images", "gradient_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.joint_steps < 0:
            raise ValueError(f"joint_steps must be 0 (no joint phase) or more, got {self.joint_steps}")
        if self.joint_images < 0:
            raise ValueError(f"joint_images must be 0 (whole calibration batches) or more, got {self.joint_images}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    def resolved_ranges(self, w_bits: int, a_bits: int) -> tuple[float, float]:
        """(weight range, activation range) with the mode's defaults filled in."""
        if self.mutation == "absolute":
            w_default = ABSOLUTE_RANGE_LOW_BITS if w_bits <= LOW_BITS else ABSOLUTE_RANGE_HIGH_BITS
            a_default = ABSOLUTE_RANGE_LOW_BITS if a_bits <= LOW_BITS else ABSOLUTE_RANGE_HIGH_BITS
        else:
            w_default = RELATIVE_RANGE_WEIGHTS * relative_range_factor(w_bits)
            a_default = RELATIVE_RANGE_ACTIVATIONS * relative_range_factor(a_bits)
        return (self.mutation_range if self.mutation_range is not None else w_default,
                self.act_mutation_range if self.act_mutation_range is not None else a_default)

    def cycles_for(self, n_blocks: int) -> int:
        """Cycles per block step: ``cycles``, or with a ``budget`` as many as it pays for (at least 1)."""
        if self.budget is None:
            return self.cycles
        return max(1, (self.budget - 1) // (self.passes * n_blocks * self.children))

    @property
    def joint(self) -> bool:
        """Whether the search starts with the joint phase (joint.py)."""
        return self.joint_steps > 0 and self.strategy in JOINT

    def evaluations(self, n_blocks: int) -> int:
        """Candidate evaluations of a whole run: the base once, then every child of the block steps (the
        joint phase's steps and checks are its own cost, counted in time, not here)."""
        return 1 + self.passes * n_blocks * self.cycles_for(n_blocks) * self.children

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The values that make this search differ from another (``search_identity``)."""
        return search_identity(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SearchConfig":
        """Also reads files written before a field existed (``SEARCH_FIELDS_ADDED``)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown search parameters: {', '.join(sorted(unknown))}")
        return cls(**{**SEARCH_FIELDS_ADDED, **values})


# Fields added after run files and checkpoints were first written, with the value every earlier search
# used: an older file is known to have searched with them, so they are compared, not skipped as unknown.
SEARCH_FIELDS_ADDED: dict[str, Any] = {"vector": "channels", "budget": None, "direction": "sign", "joint_steps": 0,
                                       "gradient_images": None, "acceptance": "loss", "joint_images": 0}


def search_identity(values: dict[str, Any]) -> dict[str, Any]:
    """The fields of a search's values (a config, or what a run file or checkpoint of any age recorded)
    that change what it computes: older files get ``SEARCH_FIELDS_ADDED``, and a field the strategy
    does not use (the population of a guided search, the direction of an evolution) is left out, so
    two runs that differ only there are the same run. Fields an old file lacks stay out (unknown)."""
    values = {**SEARCH_FIELDS_ADDED, **values}
    out = {}
    for option in fields(SearchConfig):
        used = option.metadata.get("used")
        if option.name in values and (used is None or used(values)):
            out[option.name] = values[option.name]
    return out


_CPTV_PAPER = SearchConfig(
    preset="cptv-paper", scope="attn", population=15, tournament=10, cycles=3, children=1, passes=10,
    strategy="evolution", mutation="absolute", loss="contrastive", temperature=3.0, features="logits",
    select="best-heldout",
)
_GUIDED = SearchConfig()
# Named for what they are; the names runs were made with before stay as aliases (the same objects),
# so old commands, run files and checkpoints keep working.
PRESETS: dict[str, SearchConfig] = {
    "guided": _GUIDED,
    "cptv-paper": _CPTV_PAPER,
    "null": replace(_GUIDED, preset="null", strategy=NULL_OF[_GUIDED.strategy]),
}
PRESET_ALIASES = {"default": "guided", "release": "cptv-paper", "random": "null"}
PRESETS.update({alias: PRESETS[name] for alias, name in PRESET_ALIASES.items()})
PRESET_LABELS = {"guided": "Guided (recommended)", "cptv-paper": "CPT-V paper", "null": "Null baseline"}


def preset_label(name: str | None) -> str:
    """How a person reads a preset name (a run file's, maybe an alias): ``release`` -> ``CPT-V paper``."""
    if not name:
        return "custom"
    return PRESET_LABELS.get(PRESET_ALIASES.get(name, name), name)


_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("scope", str, "searched scales: 'all' or attn/mlp/act joined by '+' (attn, mlp = weight scales of "
                   "qkv+proj, fc1+fc2; act = the block's activation clip scales)"),
    ("population", int, "population size per block step"),
    ("tournament", int, "members drawn (with replacement) to pick each parent"),
    ("cycles", int, "cycles per block step"),
    ("children", int, "children per cycle (evaluated in one batched pass)"),
    ("passes", int, "sweeps over all blocks, last to first"),
    ("strategy", str, "guided (the straight-through gradient proposes a direction, the cycle's children are "
                      "steps along it, the exact fitness keeps the best if it lowers the loss); evolution (the "
                      "CPT-V paper's); cmaes (CMA-ES, the cmaes library; a generation = the cycle's children); "
                      "guided-null (guided's null: the same moves along random directions, the same acceptance); "
                      "random (evolution's null: parents and survivors drawn at random); guided-random (a random "
                      "walk along guided's moves that keeps every move: not a null, it loses by construction)"),
    ("vector", str, "channels: every scale of the selected points; points: one factor per quantization point; "
                    "points+channels: both"),
    ("direction", str, "guided: how the gradient becomes a move. scaled: the gradient over its RMS within each "
                       "quantization point, clipped to +-2 mutation ranges; sign: every coordinate moves by its "
                       "whole range"),
    ("budget", int, "total loss evaluations of the run (at least 2); sets the cycles per block step (unset: "
                    "--cycles)"),
    ("mutation", str, "evolution and random: absolute, |s + U(-r, r)| (the release), or relative, "
                      "s * exp(U(-r, r)); the other strategies step relatively"),
    ("mutation-range", float, "r for weight scales (unset: 1e-3 at <=4 bits else 1e-4 absolute; 0.05 relative, "
                              "halved per bit above 4)"),
    ("act-mutation-range", float, "r for activation scales (unset: as weights absolute; 0.1 relative, "
                                  "halved per bit above 4)"),
    ("loss", str, "fitness: contrastive (InfoNCE), kl, mse (the default) or cosine"),
    ("temperature", float, "softmax temperature of contrastive and kl"),
    ("features", str, "compare logits or prelogits (the features before the head)"),
    ("select", str, "result: last step, best-loss step, or best-heldout step (the base counts as step 0)"),
    ("search-images", int, "calibration images the fitness compares: the first N of the calibration draw "
                           "(unset: all; fewer is faster and noisier)"),
    ("joint-steps", int, "guided and guided-null: the most Adam steps of the joint phase, which moves every block's "
                         "scales together along the straight-through gradient before the block steps, early-stopped "
                         "on half of the calibration images and kept only if it lowers the loss (0: none)"),
    ("joint-images", int, "guided and guided-null: the images of one Adam step of the joint phase: each calibration "
                          "batch it steps on is split into interleaved parts of at most this many (0: whole "
                          "batches, and a check every 10 steps, not 20, as before this flag)"),
    ("acceptance", str, "guided and its null: what a block step's move must lower to be kept. both-halves: the loss "
                        "and the loss of the checking half of the calibration images (the odd batches); loss: the "
                        "loss alone"),
    ("gradient-images", int, "guided: the calibration images the gradient is taken on, the first N of the fitness's "
                             "(unset: all); it only proposes, the exact fitness on all of them decides"),
)
_CHOICES = {"vector": VECTORS, "direction": DIRECTIONS, "strategy": STRATEGIES, "mutation": MUTATIONS,
            "loss": LOSS_NAMES, "features": FEATURES, "select": SELECTIONS, "acceptance": ACCEPTANCES}


_LOWEST = {"budget": 2, "joint_steps": 0, "joint_images": 0}   # the least value of an integer flag, where it is not 1


def _preset_defaults(dest: str) -> str:
    """``--help``'s default of a search flag, read from PRESETS so that it cannot go stale."""
    values = {name: getattr(PRESETS[name], dest) for name in PRESET_LABELS}
    shown = {name: "unset" if value is None else value for name, value in values.items()}
    if len(set(shown.values())) == 1:
        return f"(default: {next(iter(shown.values()))} in every preset)"
    return "(default: the preset's; " + ", ".join(f"{name}: {value}" for name, value in shown.items()) + ")"


def add_search_args(parser: argparse.ArgumentParser) -> None:
    """The search flags; each overrides the chosen preset only when given (argparse's default is None),
    each checked as it is parsed (the CLI's argparse types name the flag and its range)."""
    from ..argtypes import int_range, positive_float   # flags checked as parsed, like every CLI flag

    group = parser.add_argument_group("search (flags override the preset)")
    group.add_argument("--preset", choices=list(PRESETS), default="guided", metavar="PRESET",
                       help="guided (the default: the gradient proposes, the exact fitness keeps only improvements), "
                            "cptv-paper (the CPT-V paper's contrastive evolutionary search, as its release runs it), "
                            "null (guided's null baseline: the same moves along random directions); default, release "
                            "and random are their aliases (default: guided)")
    for flag, kind, text in _FLAGS:
        dest = flag.replace("-", "_")
        check = {int: int_range(_LOWEST.get(dest, 1)), float: positive_float}.get(kind, kind)
        group.add_argument(f"--{flag}", dest=dest, type=check, default=None, choices=_CHOICES.get(dest),
                           help=f"{text} {_preset_defaults(dest)}")
    group.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                       help="torch.compile candidate evaluation (same losses, bit for bit; falls back to eager if "
                            "compiling fails). on: compiled blocks; auto, for blocks of deit_tiny's size and up: "
                            "compiled blocks on CUDA, and on the CPU eager blocks with fake quantization as one "
                            "fused kernel (faster there than compiled blocks); off: eager")


def search_flag_dests() -> tuple[str, ...]:
    """The argparse dests of the search flags (each a SearchConfig field)."""
    return tuple(flag.replace("-", "_") for flag, _, _ in _FLAGS)


def search_config_from_args(args: argparse.Namespace) -> SearchConfig:
    overrides = {flag.replace("-", "_"): getattr(args, flag.replace("-", "_"), None) for flag, _, _ in _FLAGS}
    return replace(PRESETS[args.preset], **{k: v for k, v in overrides.items() if v is not None})

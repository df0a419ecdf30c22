"""How each SearchConfig field appears in the run panel: its label, hint, range and widget kind.

A field without an entry here still gets a generic widget, so a new engine option shows up in the
app without a change here; an entry only makes it readable.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from engine.search import config as search_config


@dataclass(frozen=True)
class Option:
    label: str
    hint: str
    minimum: float = 0
    maximum: float = 1_000_000
    decimals: int = 6
    choices: tuple[str, ...] = ()
    advanced: bool = False
    empty: str = "automatic"      # what an empty optional field means (its placeholder)


# Labels and hints for SearchConfig fields; choices fall back to the engine's own constants.
OPTIONS: dict[str, Option] = {
    "passes": Option("Passes", "Sweeps over all transformer blocks (each sweep visits them last to first).", 1, 1000),
    "cycles": Option("Cycles per block", "Cycles per block step. guided: a gradient, then the children; evolution: "
                     "pick parents, mutate, keep the best.", 1, 10000),
    "population": Option("Population", "evolution: candidate scale sets kept per block (the paper uses 15).", 2, 10000),
    "children": Option("Children per cycle", "New candidates evaluated in each cycle (batched together); guided: "
                       "step sizes along the gradient's direction.", 1, 10000),
    "tournament": Option("Tournament size", "Members drawn (with replacement) to pick each parent.", 1, 10000,
                         advanced=True),
    "scope": Option("Searched scales", "Which scales the search may change, joined by '+': attn = weight scales of "
                    "qkv and proj (the paper), mlp = weight scales of fc1 and fc2, act = the block's activation "
                    "clip ranges; all = everything.",
                    choices=("attn+act", "attn", "attn+mlp", "attn+mlp+act", "act", "mlp", "all")),
    "strategy": Option("Strategy", "guided = the gradient proposes a move, the exact loss keeps the best "
                       "step if it lowers the loss; evolution = the CPT-V paper's search; cmaes = CMA-ES, which adapts "
                       "its sampling to the losses seen; guided-null = guided's null baseline: the same moves along "
                       "random directions, kept by the same rule; random = evolution's null (random parents and "
                       "survivors); guided-random = a random walk that keeps every move (not a null: it loses by "
                       "construction).", advanced=True),
    "vector": Option("Searched vector", "channels = every scale, one per output channel of a weight (the paper); "
                     "points = one factor per quantization point (each channel keeps its calibrated share); "
                     "points+channels = both.",
                     advanced=True),
    "direction": Option("Guided direction", "guided: how the gradient becomes a move. scaled = in proportion to "
                        "the gradient (per quantization point, its RMS = one mutation range, at most two); "
                        "sign = every scale moves by its full range, which stalls on some settings.", advanced=True),
    "budget": Option("Budget (evaluations)", "Total candidate evaluations of the run; sets the cycles per block "
                     "step. Empty = passes × blocks × cycles × children.", 2, 10_000_000, 0, empty="from cycles"),
    "loss": Option("Fitness loss", "How far the quantized model's outputs are from the full-precision ones. "
                   "mse = mean squared difference of the logits (the default); contrastive = InfoNCE of the paper; "
                   "kl = KL divergence to the FP softmax."),
    "temperature": Option("Temperature", "Softmax temperature T of the contrastive and kl losses (paper: 3).", 1e-4, 1e4, 4,
                          advanced=True),
    "mutation": Option("Mutation", "evolution and random: absolute = scale + U(-r, r) (the paper); relative = "
                       "scale × exp(U(-r, r)). The other strategies always step relatively.",
                       advanced=True),
    "mutation_range": Option("Weight mutation r", "Size of each random change of a weight scale. Empty = automatic "
                             "(absolute: 1e-3 at <= 4 bits, else 1e-4; relative: 0.05, halved per bit above 4).",
                             0, 10, 6, advanced=True),
    "act_mutation_range": Option("Activation mutation r", "Size of each random change of an activation clip scale. "
                                 "Empty = automatic (absolute: as weights; relative: 0.1, halved per bit above 4).",
                                 0, 10, 6, advanced=True),
    "select": Option("Result taken from", "Which block step's scales become the result. last / best-loss are "
                     "label-free; best-heldout selects on held-out top-1 (never on the test split)."),
    "search_images": Option("Search images", "Calibration images the fitness compares: the first N of the "
                            "calibration draw (fewer = faster, noisier). Empty = all.", 1, 1_000_000, advanced=True,
                            empty="all"),
    "joint_steps": Option("Joint steps", "guided: the most Adam steps of the joint phase, which moves every block's "
                          "scales together along the straight-through gradient before the block steps; it stops "
                          "early when half of the calibration images stop improving, and is kept only if it lowers "
                          "the loss. 0 = no joint phase.", 0, 100_000),
    "joint_images": Option("Joint step images", "guided: the images of one Adam step of the joint phase; each "
                           "calibration batch it steps on is split into interleaved parts of at most this many "
                           "(smaller: cheaper steps). 0 = whole batches.", 0, 1_000_000, advanced=True),
    "gradient_images": Option("Gradient images", "guided: the calibration images the gradient is taken on (the "
                              "first N of the fitness's); it only proposes, the loss on all of them decides. "
                              "Empty = all.", 1, 1_000_000, advanced=True, empty="all"),
    "acceptance": Option("Kept moves", "guided: what a block step's move must lower to be kept. both-halves = the "
                         "loss and the loss of the checking half of the calibration images (a gain that does not "
                         "carry over to the other half is refused); loss = the loss alone.", advanced=True),
    "features": Option("Compared outputs", "Compare logits or pre-logit features with the FP model.",
                       advanced=True),
}
# RunSpec.compile, among the advanced search options: how candidate evaluation computes, not what.
COMPILE_OPTION = Option("Compile", "torch.compile candidate evaluation, so fake quantization costs fewer passes "
                        "over memory: faster evaluations after a one-off compile, identical results (bit for bit). "
                        "On a GPU the blocks are compiled whole; on the CPU they stay eager and each fake "
                        "quantization is one fused kernel (faster there than compiled blocks). auto: for blocks of "
                        "deit_tiny's size and up, not the small digits demo; on: always. If compiling fails (no C++ "
                        "toolchain, an unsupported op) the search falls back to eager with one log line.",
                        choices=search_config.COMPILE_MODES, advanced=True)
HIDDEN_FIELDS = {"preset", "seed", "device", "calib_size", "batch_size"}
ENUM_CONSTANTS = {"loss": ("LOSS_NAMES",), "select": ("SELECTIONS",), "mutation": ("MUTATIONS",),
                  "acceptance": ("ACCEPTANCES",), "features": ("FEATURES",), "strategy": ("STRATEGIES",),
                  "vector": ("VECTORS",)}


def choices(name: str, current: Any) -> list[str]:
    for const in ENUM_CONSTANTS.get(name, ()) + (name.upper() + "S", name.upper() + "_CHOICES"):
        values = getattr(search_config, const, None)
        if values:
            return [str(v) for v in values]
    values = {str(getattr(p, name)) for p in search_config.PRESETS.values() if getattr(p, name, None) is not None}
    return sorted(values | {str(current)}) if current is not None else sorted(values)


def base_type(annotation: Any, default: Any) -> tuple[type, bool]:
    """(int|float|str|bool, optional?) of a dataclass field."""
    if isinstance(annotation, str):
        optional = "None" in annotation
        for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
            if annotation.replace("None", "").strip(" |").startswith(name):
                return kind, optional
    args = typing.get_args(annotation)
    if args:
        kinds = [a for a in args if a is not type(None)]
        return (kinds[0] if kinds else str), type(None) in args
    if default is not None:
        return type(default), False
    return str, True


def field_types() -> dict[str, Any]:
    """SearchConfig's resolved annotations, or {} where they cannot be resolved (then defaults decide)."""
    try:
        return typing.get_type_hints(search_config.SearchConfig)
    except Exception:
        return {}

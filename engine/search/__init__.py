"""The CPT-V search (DESIGN §4): presets, the event generator, and its building blocks.

``run_search(spec, config)`` is the entry point of the CLI, the app's worker and sweeps.
Rooms: losses (fitness), config (presets and flags), space (a block's scale points and mutation),
vector (the coordinates a strategy searches), segments (a model cut at its blocks), evaluator
(cached and batched candidate losses, the scales' gradient) and compiled (its compiled forwards),
guided, evolution and cma_es (one block step each; steps, the types they share), checkpoint
(resumable state), run (the whole search), events (the search's; ``Stage`` is every job's, engine/events.py).
"""
from .config import PRESETS, SearchConfig, add_search_args, search_config_from_args
from .events import BlockDone, Evaluated, Event, Finished, PassDone, Stage, Started
from .run import run_search, search_prepared

__all__ = [
    "PRESETS", "SearchConfig", "add_search_args", "search_config_from_args", "run_search", "search_prepared",
    "Event", "Stage", "Started", "Evaluated", "BlockDone", "PassDone", "Finished",
]

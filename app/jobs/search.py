"""SearchJob: a CPT-V search, new or resumed from its checkpoint (the engine's ``run_search`` events)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from engine.pipeline import RunSpec
from engine.search.config import SearchConfig
from engine.search.events import Finished
from engine.search.run import run_search
from engine.sweep import SearchFn


@dataclass(frozen=True)
class SearchJob:
    """``search_fn`` replaces the engine's ``run_search`` (tests replay events through it); its result is
    the finished RunRecord."""
    spec: RunSpec
    config: SearchConfig
    checkpoint: Path
    resume: Path | None = None
    search_fn: SearchFn | None = None
    name: ClassVar[str] = "search"
    shows_run: ClassVar[bool] = True

    def events(self) -> Iterator[Any]:
        search = self.search_fn or run_search
        return search(self.spec, self.config, checkpoint=self.checkpoint, resume=self.resume)

    def result_of(self, event: Any) -> Any:
        return event.run if isinstance(event, Finished) else None

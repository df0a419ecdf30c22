"""PlanJob: choose a bit plan for a budget of mean bits, like ``python -m engine plan`` (its ``plan_run`` events:
``Stage``, ``Measured``, then ``Planned``, whose ``PlanResult`` is the result)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from engine.pipeline import RunSpec
from engine.plan.run import PlanConfig, Planned, plan_run


@dataclass(frozen=True)
class PlanJob:
    """``spec``: the model, data, quantizer and seed the plan is for (its bits are unused)."""
    spec: RunSpec
    config: PlanConfig
    name: ClassVar[str] = "plan"
    shows_run: ClassVar[bool] = False

    def events(self) -> Iterator[Any]:
        return plan_run(self.spec, self.config)

    def result_of(self, event: Any) -> Any:
        return event.result if isinstance(event, Planned) else None

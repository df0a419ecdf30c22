"""The Plan tab's link to the run window: the run panel's settings it plans for, and a search from a plan.

A controller the main window owns: the Plan tab reads the model, data, quantizer and seed from the run panel,
and a plan clicked in it becomes a search with the run panel's settings and that plan's widths, quantizer and
base widths (``engine.plan.summary.with_plan``, as ``python -m engine search --plan PLAN`` takes them).
"""
from __future__ import annotations

import logging
from typing import Any

from engine.plan import BitPlan
from engine.plan.summary import with_plan

from app.window.view import WindowView

log = logging.getLogger(__name__)
CONTEXT = "Search from the plan"


class PlanActions:
    """``window``'s run panel is what the Plan tab plans for and searches with."""

    def __init__(self, window: WindowView) -> None:
        self.window = window

    def run_spec(self) -> Any:
        """The run panel's RunSpec, or None after telling the user what is wrong."""
        return self.window.read_form(self.window.run_panel.spec, "Plan")

    def search_from(self, plan: BitPlan) -> bool:
        """Start a search of ``plan``; False (after a dialog) when the settings or the plan do not fit, or busy."""
        settings = self.window.run_settings(CONTEXT)
        if settings is None:
            return False
        spec = self.window.read_form(lambda: with_plan(settings[0], plan), CONTEXT)
        if spec is None:
            return False
        log.info("searching from the plan: %s %s", spec.quant.quantizer, spec.quant.bits_label)
        started = self.window.start_run(spec, settings[1])
        if started:   # the form shows the plan searched, so Start reruns it
            self.window.run_panel.set_values(spec)
        return started

"""Mixed precision: choose a bit-width per quantization point for a budget of mean bits (``python -m engine
plan``), from what the diagnosis measures, and the plan files ``search --plan`` reads."""
from .file import BitPlan, PlanFileError, load_plan, save_plan

__all__ = ["BitPlan", "PlanFileError", "load_plan", "save_plan"]

"""The run library window: a workspace of run files, sweeps, and the views that compare runs."""

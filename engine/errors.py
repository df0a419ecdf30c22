"""Exception types that front ends tell apart by type, never by the words of their message."""
from __future__ import annotations


class MissingExtra(ValueError):
    """An optional part needs packages that are not installed (``pip install 'cptv-studio[EXTRA]'``)."""

    def __init__(self, extra: str, what: str) -> None:
        self.extra = extra
        super().__init__(f"{what}: pip install 'cptv-studio[{extra}]' (or pip install -e '.[{extra}]' in a checkout)")


class ExportError(ValueError):
    """A run that an export format cannot express; the message names the point and what to do."""


class CheckpointError(ValueError):
    """A search checkpoint that cannot be read, or that belongs to another run."""

"""What the menus' controllers (file, export and sweep actions) may use of the main window.

Written down as a Protocol, below the window and its controllers, so a controller depends on these
members only (never on the window's module, which imports the controllers) and a reader sees at once
what a controller can change: the run view's state, the panels it reads, and the window's signals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from PySide6.QtCore import SignalInstance
from PySide6.QtWidgets import QStatusBar

from app.files import RecentFiles
from app.run.controls import ControlBar
from app.run.panel import RunPanel
from app.run.results_card import ResultsCard
from app.run.state import RunState

T = TypeVar("T")


class WindowView(Protocol):
    """The main window as its controllers see it (``MainWindow`` is one; it is also the widget their dialogs
    open over)."""

    state: RunState                             # the run view's state; a controller may replace it
    last_run: tuple[Any, Any, Path] | None      # what Resume continues; None after a file or a sweep
    results: ResultsCard
    run_panel: RunPanel
    controls: ControlBar
    recent: RecentFiles
    interactive: bool
    search_fn: Callable[..., Any] | None
    evaluation_ended: SignalInstance
    export_ended: SignalInstance
    sweep_progress: SignalInstance
    sweep_run_done: SignalInstance
    sweep_run_failed: SignalInstance
    sweep_ended: SignalInstance

    def refresh(self) -> None: ...
    def say(self, text: str) -> None: ...
    def show_error(self, exc: BaseException, context: str) -> None: ...
    def read_form(self, read: Callable[[], T], context: str) -> T | None: ...
    def run_settings(self, context: str) -> tuple[Any, Any] | None: ...
    def show_run_event(self, item: Any) -> None: ...
    def resume_run(self, path: str | Path | None = None) -> bool: ...
    def start_run(self, spec: Any, config: Any) -> bool: ...
    def statusBar(self) -> QStatusBar: ...

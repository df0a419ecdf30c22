"""A window's first size: the one it is designed for, or what a framed window can take of a smaller screen."""
from __future__ import annotations

from typing import Any

FRAME = (16, 40)    # what a window manager's frame and title bar may take of the screen


def window_size(screen: tuple[int, int], wanted: tuple[int, int]) -> tuple[int, int]:
    """``wanted``, or as much of a smaller screen as a framed window can take."""
    return min(wanted[0], screen[0] - FRAME[0]), min(wanted[1], screen[1] - FRAME[1])


def fit_to_screen(window: Any, wanted: tuple[int, int]) -> None:
    """Size ``window`` to ``wanted`` or to its screen, whichever is smaller: it never starts past the screen."""
    from PySide6.QtGui import QGuiApplication

    screen = window.screen() or QGuiApplication.primaryScreen()
    room = screen.availableGeometry()
    window.resize(*window_size((room.width(), room.height()), wanted))

"""CPT-V Studio's desktop app (PySide6 + pyqtgraph): a thin view over the engine's search events.

The engine never imports this package; everything here can be done headless with ``python -m engine``.
"""
from .compat import guard_refcounts

guard_refcounts()   # PySide6 6.12 on Python 3.11 would otherwise abort long sessions (see compat.py)

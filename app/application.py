"""The QApplication, its style, and the command line of ``python main.py``.

``python main.py``                      opens the window with the built-in demo selected.
``python main.py --run-demo [--passes N] --screenshot PATH --quit-when-done``
                                        runs a demo search at launch, saves a screenshot of the window
                                        when it ends, and exits 0 (non-zero on failure).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from engine.allocator import keep_freed_memory
from engine.threads import make_thread_invariant

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
ORGANIZATION, APPLICATION = "CPT-V", "CPT-V Studio"


def launch(argv: list[str] | None = None) -> int:
    """The gui-script entry point (``cptv-studio``): the same command line as ``python main.py``."""
    return run_app(sys.argv[1:] if argv is None else argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python main.py", description="CPT-V Studio: refine quantized ViTs.")
    from engine.quant import available_quantizers
    from engine.search.config import PRESETS

    parser.add_argument("--run-demo", action="store_true",
                        help="start a search at launch (on the built-in demo unless --model/--data say otherwise)")
    parser.add_argument("--passes", type=int, default=None, help="passes of that search (default: the preset's)")
    parser.add_argument("--cycles", type=int, default=None, help="cycles per block step (default: the preset's)")
    parser.add_argument("--children", type=int, default=None, help="children per cycle (default: the preset's)")
    parser.add_argument("--joint-steps", type=int, default=None,
                        help="the most steps of the joint phase, 0 = none (default: the preset's)")
    parser.add_argument("--calib-size", type=int, default=None, help="calibration images (default 1000)")
    parser.add_argument("--preset", choices=list(PRESETS), default=None, help="search preset (default: guided)")
    parser.add_argument("--quantizer", choices=available_quantizers(), default=None,
                        help="preselect a base quantizer (default: the demo's hard setting)")
    parser.add_argument("--model", default=None, help="preselect a timm model name instead of the demo")
    parser.add_argument("--weights", default=None, help="preselect a local weights file")
    parser.add_argument("--data", default=None, help="preselect an ImageNet-style data folder")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a PNG of the window when the run ends")
    parser.add_argument("--quit-when-done", action="store_true", help="exit when the run ends (0 = finished)")
    parser.add_argument("--open", type=Path, default=None, help="open a run file at launch")
    return parser


def make_application(argv: list[str] | None = None):
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0], *(argv or [])])
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    font = QFont(app.font())
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    app.setFont(font)
    style = RESOURCES / "style.qss"
    if style.exists():
        app.setStyleSheet(style.read_text())
    return app


def run_app(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()   # process-wide, so the entry point sets it (engine/allocator.py)
    make_thread_invariant()   # likewise, before any computation (engine/threads.py)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.quit_when_done and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    app = make_application([])
    from PySide6.QtCore import QTimer

    from app.window.main_window import MainWindow
    from app.responsiveness import StallProbe

    window = MainWindow(interactive=not args.quit_when_done)
    window.show()
    result = {"code": 0}
    probe = StallProbe(parent=window)

    def ended(kind: str) -> None:
        probe.stop()
        summary = {"outcome": kind, "max_stall_ms": round(probe.max_stall_ms, 1),
                   "p99_stall_ms": round(probe.percentile_ms(99), 1)}
        if window.state.run is not None:
            metrics = window.state.run.metrics
            summary.update({k: metrics.get(k) for k in ("fp_top1", "base_top1", "refined_top1", "evaluations",
                                                        "search_seconds", "device")})
            if "quality" in metrics:   # a model without a classifier: feature cosine to FP instead of top-1
                summary.update({k: metrics.get(k) for k in ("quality", "base_feature_cosine", "refined_feature_cosine")
                                if k in metrics})
        result["code"] = 0 if kind == "finished" else 1
        if args.screenshot is not None:
            save_screenshot(window, args.screenshot)
            summary["screenshot"] = str(args.screenshot)
        print(json.dumps(summary, default=str), flush=True)
        if args.quit_when_done:
            QTimer.singleShot(0, lambda: app.exit(result["code"]))

    panel = window.run_panel
    if args.model:
        panel.model.setCurrentText(args.model)
    if args.weights:
        panel.weights.setText(args.weights)
    if args.data:
        panel.data.setText(args.data)
    if args.preset:
        panel.select_preset(args.preset)
    if args.quantizer:
        panel.quantizer.setCurrentText(args.quantizer)
    if args.open is not None:
        window.files.open_run(args.open)
    if args.run_demo:
        for name in ("passes", "cycles", "children", "joint_steps"):
            if getattr(args, name) is not None and name in panel.fields:
                panel.fields[name].set(getattr(args, name))
        if args.calib_size is not None:
            panel.calib_size.setValue(args.calib_size)
        window.run_ended.connect(ended)

        def begin() -> None:
            probe.start()
            if not window.start():
                ended("failed")

        QTimer.singleShot(0, begin)
    elif args.quit_when_done:
        QTimer.singleShot(0, lambda: (args.screenshot and save_screenshot(window, args.screenshot), app.exit(0)))
    code = app.exec()
    return result["code"] if args.run_demo else code


def save_screenshot(window, path: Path) -> None:
    from PySide6.QtWidgets import QApplication

    for _ in range(3):   # let the last redraw and layout settle
        QApplication.processEvents()
    window.plots.update_from(window.state)
    QApplication.processEvents()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path)):
        raise OSError(f"could not write the screenshot {path}")

"""A screenshot of the run window's Plan tab showing a plan file (nothing is measured: the file is only read).

``python -m app.run.plan_screenshot PLAN.json [--out docs/screens/plan-view.png]`` opens the window offscreen at
1440×900, shows the plan on the Plan tab and saves the window as it is drawn.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SIZE = (1440, 900)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.run.plan_screenshot")
    parser.add_argument("plan", type=Path, help="a plan file (.json) or a plan's run file (.h5)")
    parser.add_argument("--out", type=Path, default=Path("docs/screens/plan-view.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="cptv-shots-")     # never the user's own settings

    from app.application import make_application
    from app.jobs.background import wait_for
    from app.window.main_window import MainWindow

    app = make_application([])
    window = MainWindow(interactive=False)
    window.resize(*SIZE)
    window.show()
    window.view_tabs.setCurrentWidget(window.plan)
    if window.plan.open_plan(args.plan) is None:
        print(f"error: could not read {args.plan}", file=sys.stderr)
        return 2
    wait_for(lambda: False, 0.5)       # let the plots lay out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(args.out), "PNG")
    print(args.out)
    window.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())

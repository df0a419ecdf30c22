"""Screenshots of the Diagnose tab, from a saved diagnosis (a run file's /diagnosis group or a DIAG.h5).

``python -m app.run.diagnose_screenshots DIAG.h5 [--out docs]`` shows the tab offscreen at 1400×850
(read-only: nothing is measured, the file is only read) and saves diagnose.png (sensitivity of the
base scales) and diagnose_change.png (the search's change: refined − base).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

SIZE = (1400, 850)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.run.diagnose_screenshots")
    parser.add_argument("diagnosis", type=Path, help="a run file diagnosed with --into-run, or a DIAG.h5 (--out)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go (default docs/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(tempfile.mkdtemp(prefix="cptv-shots-"))
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")      # never the user's own settings

    from app.application import make_application
    from app.run.diagnose_panel import DiagnosePanel
    from app.widgets.diagnose_views import DIFFERENCE

    app = make_application([])
    panel = DiagnosePanel()
    panel.resize(*SIZE)
    panel.set_run(None, args.diagnosis)
    panel.show()
    app.processEvents()
    if panel.diagnosis is None:
        print(f"error: {panel.status.text()}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    def shoot(name: str) -> None:
        for _ in range(5):
            app.processEvents()
        panel.grab().save(str(args.out / name), "PNG")
        print(args.out / name)

    shoot("diagnose.png")
    scales = panel.heatmap.scales_choice
    if scales.findData(DIFFERENCE) >= 0:
        scales.setCurrentIndex(scales.findData(DIFFERENCE))
        shoot("diagnose_change.png")
    panel.close()
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

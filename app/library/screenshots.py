"""Screenshots of the run library and its comparison views, from a folder of real run files.

``python -m app.library.screenshots RUN_DIR [--out docs]`` copies the run files to a temporary
workspace (the originals are never touched), opens the library window offscreen at 1400×850 and
saves library.png, accuracy_vs_bits.png, side_by_side.png (and matrix.png, layer.png).
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
    parser = argparse.ArgumentParser(prog="python -m app.library.screenshots")
    parser.add_argument("runs", type=Path, help="a folder of run files (e.g. a sweep's --out-dir)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go (default docs/)")
    parser.add_argument("--select", default="omse_W4A3_s0,percentile_W4A3_s0,minmax_W4A3_s0",
                        help="comma-separated parts of the file names to compare side by side")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    home = Path(tempfile.mkdtemp(prefix="cptv-shots-"))
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")      # never the user's own settings
    workspace = home / "CPT-V runs"
    workspace.mkdir()
    for path in sorted(args.runs.glob("*.h5")):
        shutil.copy2(path, workspace / path.name)

    from PySide6.QtWidgets import QApplication

    from app.application import make_application
    from app.jobs.background import wait_for
    from app.library.window import LibraryWindow

    app = make_application([])
    window = LibraryWindow(workspace=workspace)
    window.resize(*SIZE)
    window.show()
    wait_for(lambda: not window.panel.scanning)
    args.out.mkdir(parents=True, exist_ok=True)

    def shoot(view, name: str) -> None:
        window.show_tab(view)
        wait_for(lambda: not window.layer.loading, timeout_s=120)
        for _ in range(5):
            app.processEvents()
        window.grab().save(str(args.out / name), "PNG")
        print(args.out / name)

    wanted = [part for part in args.select.split(",") if part]
    files = [row.file for row in window.panel.model.rows() if row.ok and any(part in row.file for part in wanted)]
    shoot(window.panel, "library.png")
    shoot(window.accuracy, "accuracy_vs_bits.png")
    shoot(window.matrix, "matrix.png")
    window.panel.select_files(files)
    shoot(window.side, "side_by_side.png")
    shoot(window.layer, "layer.png")
    window.close()
    shutil.rmtree(home, ignore_errors=True)
    QApplication.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPT-V Studio: ``python main.py`` opens the desktop app on the built-in demo.

``python main.py --run-demo [--passes N] --screenshot PATH --quit-when-done`` runs a demo search at
launch, saves a screenshot of the window when it finishes, and exits 0 (non-zero on failure).
"""
import sys

from app.application import run_app

if __name__ == "__main__":
    sys.exit(run_app(sys.argv[1:]))

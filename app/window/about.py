"""Help ▸ About: what the app is, and the versions that compute its runs (to quote in a bug report)."""
from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

DESCRIPTION = "Refines the quantization scales of post-training quantized Vision Transformers."


def about_text() -> str:
    import timm
    import torch

    from engine.provenance import package_version

    return (f"<h3>CPT-V Studio {package_version()}</h3><p>{DESCRIPTION}</p>"
            f"<p>torch {torch.__version__} · timm {timm.__version__}</p>"
            "<p>Presets: <i>Guided (recommended)</i>, a joint phase along the gradient, then block by block the "
            "gradient proposes each move and a step is kept only if it lowers the loss; <i>CPT-V paper</i>, the paper's contrastive evolutionary search (arXiv "
            "2211.09643, released as Evol-Q, ICCV 2023); <i>Null baseline</i>, the guided moves along random "
            "directions. Everything the window does, <code>python -m engine</code> does headless.</p>")


def show_about(parent: QWidget) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.NoIcon, "About CPT-V Studio", about_text(), QMessageBox.StandardButton.Ok,
                      parent)
    box.setObjectName("aboutDialog")
    box.open()
    return box

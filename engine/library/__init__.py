"""The run library: a workspace folder of run files read as rows, and the comparisons drawn from them.

Rooms: ``rows`` (one flat ``LibraryRow`` per run file, ``scan_workspace``, CSV) and ``compare`` (the
numbers the comparison views show: accuracy vs bit-width, side by side, one layer in detail), which
reads rows. Sweeps write into a workspace and read its rows back; nothing here knows sweeps.
"""
from .compare import (BitsMatrix, BitsPoint, LayerRun, LayerView, NamedRun, QuantGrid, RunDetail, SideBySide,
                      accuracy_vs_bits, bits_matrix, by_setting, layer_view, load_run_model, quant_grid, side_by_side,
                      to_jsonable)
from .rows import (COLUMNS, RUN_SUFFIXES, LibraryRow, moved_aside_name, read_row, row_from_record, run_files,
                   scan_workspace, write_csv)

__all__ = [
    "BitsMatrix", "BitsPoint", "COLUMNS", "LayerRun", "LayerView", "LibraryRow", "NamedRun", "QuantGrid",
    "RUN_SUFFIXES", "RunDetail", "SideBySide", "accuracy_vs_bits", "bits_matrix", "by_setting", "layer_view",
    "load_run_model", "moved_aside_name", "quant_grid", "read_row", "row_from_record", "run_files",
    "scan_workspace", "side_by_side", "to_jsonable", "write_csv",
]

"""``coverage``: which matmul-like ops of a model the quantizer reaches, measured by one probe forward.

One model: its table (one row per matmul-like op of a module, each operand's origin) and a summary
line; no data and no calibration are needed (two random images at the model's resolution). With
``--table FILE``: one Markdown row per model, the outcome ``quantize`` would have (docs/coverage.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch

from ..cli import emit
from ..models import create_model
from ..quant import CoverageReport, QuantConfig, QuantizedModel, coverage_report
from ..quant.coverage import describe_modules, modules

EXAMPLE_IMAGES, EXAMPLE_SEED = 2, 0
# docs/coverage.md: the supported baselines, then timm architectures of the other families users bring.
DOC_MODELS = (
    "digits-vit", "digits-swin", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
    "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "deit3_small_patch16_224", "vit_base_patch16_clip_224",
    "flexivit_small", "vit_medium_patch16_gap_256", "vit_little_patch16_reg4_gap_256", "cait_xxs24_224",
    "twins_svt_small", "vit_tiny_r_s16_p8_224", "pit_ti_224", "swinv2_tiny_window8_256", "beit_base_patch16_224",
    "crossvit_tiny_240", "mvitv2_tiny", "vit_relpos_small_patch16_224", "hiera_tiny_224",
    "vit_small_patch16_rope_224", "vit_small_patch14_reg4_dinov2", "vit_base_patch16_siglip_224",
    "eva02_tiny_patch14_224", "xcit_nano_12_p16_224", "levit_128s", "maxvit_tiny_tf_224",
)
TABLE_HEADER = ("| model | outcome | matmul-like ops | uncovered (module, type) | note |\n"
                "|---|---|---|---|---|")


def add_parser(sub) -> None:
    parser = sub.add_parser("coverage", help="which matmuls the quantizer reaches (one probe forward, no data)")
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="timm model names or built-in ones (several with --table; none: the docs' list)")
    parser.add_argument("--weights", help="local weights file (one model; default: random init, or the shipped "
                                          "weights of a built-in model)")
    parser.add_argument("--allow-float", action="append", default=None, metavar="MODULE_PATTERN",
                        help="modules (fnmatch on the qualified name) whose float matmuls are kept on purpose")
    parser.add_argument("--table", metavar="FILE", help="write the Markdown table of every MODEL's outcome to FILE")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quiet", action="store_true", help="no log lines on stderr")
    parser.set_defaults(func=run)


def model_report(name: str, weights: str | None = None, allow_float: tuple[str, ...] = ()) -> tuple[CoverageReport, int]:
    """The coverage of ``name`` wrapped for quantization, and its class count (0: no classifier head)."""
    model, info = create_model(name, weights=weights)
    qmodel = QuantizedModel(model, QuantConfig(allow_float=allow_float))
    example = torch.randn((EXAMPLE_IMAGES, *info.input_size), generator=torch.Generator().manual_seed(EXAMPLE_SEED))
    return coverage_report(qmodel, example), info.num_classes


def table_row(name: str) -> str:
    """One Markdown row: fully quantized, uncovered (``quantize`` refuses it, naming the modules), or the
    error the probe forward itself ran into."""
    try:
        report, classes = model_report(name)
    except Exception as exc:   # any model, any failure: the table says what happened
        message = str(exc).splitlines()[0].replace("|", "\\|") if str(exc) else ""
        return f"| `{name}` | error | | {type(exc).__name__}: {message} | |"
    uncovered = report.uncovered
    outcome = "uncovered: refused" if uncovered else "fully quantized"
    detail = f"{sum(r.count for r in uncovered)} in {modules(uncovered)}: {describe_modules(uncovered)}" if uncovered else ""
    constant = sum(r.count for r in report.rows if r.constant)
    notes = [f"{constant} on weights alone (constant)"] if constant else []
    if classes == 0:
        notes.append("no classifier head (num_classes=0)")
    return f"| `{name}` | {outcome} | {report.n_ops} | {detail} | {'; '.join(notes)} |"


def markdown(names: list[str]) -> str:
    rows = "\n".join(table_row(name) for name in names)
    return (f"# Quantization coverage\n\n"
            f"Every matmul-like op (`linear`/`addmm`/`mm`, `bmm`/`matmul`, convolutions, scaled-dot-product\n"
            f"attention, `einsum`) of each model, as one probe forward of two random images at the model's\n"
            f"resolution sees it (random init, `engine/quant/coverage.py`). *fully quantized*: every operand\n"
            f"comes out of a fake quantizer (or is the input image, which the first conv takes in float);\n"
            f"*uncovered: refused*: `quantize` and `search` stop with one `error:` line naming the modules\n"
            f"(`--allow-float PATTERN` keeps them in float on purpose); a matmul of weights alone (a position\n"
            f"bias table) is constant and counts as covered. `python -m engine coverage MODEL` prints a\n"
            f"model's op-by-op table. The same models through `quantize` and a one-pass `search`, end to\n"
            f"end: [models.md](models.md).\n\n"
            f"Made with `python -m engine coverage --table docs/coverage.md` (timm {timm.__version__},\n"
            f"torch {torch.__version__.split('+')[0]}); `tests/test_coverage.py` checks some rows.\n\n"
            f"{TABLE_HEADER}\n{rows}\n")


def run(args: argparse.Namespace) -> int:
    if args.table:
        if args.weights or args.allow_float:
            raise ValueError("--table shows random-init models as they are: no --weights or --allow-float")
        names = args.models or list(DOC_MODELS)
        Path(args.table).write_text(markdown(names))
        emit(args, {"table": args.table, "models": names}, f"wrote {args.table} ({len(names)} models)")
        return 0
    if len(args.models) != 1:
        raise ValueError("give one MODEL (or several with --table FILE)")
    name = args.models[0]
    report, _ = model_report(name, args.weights, tuple(args.allow_float or ()))
    emit(args, {"model": name, **report.to_dict()}, f"{name}\n{report.table()}")
    return 0

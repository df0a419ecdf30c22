"""``eval``: top-1 of the FP model and of a quantized one (fresh calibration or a scale file)."""
from __future__ import annotations

import argparse
from contextlib import nullcontext

from ..argtypes import existing_file
from ..cli import add_model_args, add_output_args, add_quant_args, emit, quant_config, run_spec
from ..evaluate import TOP1, quality_for, quality_key, quality_variants
from ..pipeline import prepare
from ..rebuild import rebuild
from ..scalefile import load_run


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate FP and quantized top-1 on the test split")
    add_model_args(parser)
    add_quant_args(parser, required=False, plan=True)
    parser.add_argument("--scales", type=existing_file, help="scale or run file (.h5); its refined scales are used")
    parser.add_argument("--base", action="store_true", help="with --scales: use the run's base scales instead")
    parser.add_argument("--split", choices=("test", "heldout"), default="test", help="where top-1 is measured")
    add_output_args(parser)
    parser.set_defaults(func=run)


def _quantized(args: argparse.Namespace):
    if args.scales:
        record = load_run(args.scales)
        rebuilt = rebuild(record, run_spec(args, record.quant), use_base=args.base)
        return rebuilt.qmodel, rebuilt.info, rebuilt.splits, rebuilt.device
    if not args.bits and args.plan is None:
        raise ValueError("eval needs --scales FILE, --quantizer Q --bits WxAy, or --plan PLAN")
    prepared = prepare(run_spec(args, quant_config(args)))
    return prepared.qmodel, prepared.info, prepared.splits, prepared.device


def run(args: argparse.Namespace) -> int:
    args.heartbeat.doing("loading the model and data" + ("" if args.scales else ", calibrating"))
    qmodel, info, splits, device = _quantized(args)
    args.heartbeat.doing(f"FP and quantized top-1 on the {args.split} split")
    dataset = splits.test if args.split == "test" else splits.heldout
    quality = quality_for(info.num_classes)   # top1, or feature_cosine for a model without a classifier
    measured = quality_variants(qmodel, dataset, quality, qmodel.full_precision, {"quant": nullcontext},
                                args.batch_size, device)
    fp, quant = measured["fp"], measured["quant"]
    result = {"quality": quality, quality_key(quality, "fp"): fp.top1, quality_key(quality, "quant"): quant.top1,
              f"n_{args.split}": fp.n}
    if args.split == "test":
        result["n_test"] = fp.n
    emit(args, result, f"{info.name} {qmodel.config.quantizer} {qmodel.config.bits_label} on {args.split}: "
                       + (f"FP {fp.top1:.2f}%  quantized {quant.top1:.2f}%" if quality == TOP1 else
                          f"no classifier: feature cosine to FP {quant.top1:.2f}%") + f"  (n={fp.n})")
    return 0

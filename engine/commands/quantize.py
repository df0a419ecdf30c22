"""``quantize``: calibrate a base quantizer, report FP and quantized top-1 (a model without a classifier:
the quantized features' cosine similarity to the FP ones), save the scale file."""
from __future__ import annotations

import time
from contextlib import nullcontext

from ..argtypes import output_file
from ..cli import add_model_args, add_output_args, add_quant_args, emit, require_quant_or_plan, run_spec
from ..evaluate import TOP1, quality_for, quality_key, quality_variants
from ..pipeline import prepare
from ..plan.elements import mean_bits_metrics
from ..runrecord import RunRecord, spec_values
from ..scalefile import save_run


def add_parser(sub) -> None:
    parser = sub.add_parser("quantize", help="calibrate a quantizer and save its scales")
    add_model_args(parser)
    add_quant_args(parser, required=False, plan=True)
    parser.add_argument("--out", type=output_file, required=True, help="scale file to write (.h5)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    require_quant_or_plan(args, "quantize")
    spec = run_spec(args)
    args.heartbeat.doing(f"loading {spec.model} and calibrating {spec.quant.quantizer} {spec.quant.bits_label}")
    prepared = prepare(spec)
    qmodel, splits, device = prepared.qmodel, prepared.splits, prepared.device
    info = prepared.info
    quality = quality_for(info.num_classes)   # top1, or feature_cosine for a model without a classifier
    args.heartbeat.doing(f"FP and quantized {'top-1' if quality == TOP1 else 'features'} on the test split")
    measured = quality_variants(qmodel, splits.test, quality, qmodel.full_precision, {"quant": nullcontext},
                                args.batch_size, device)
    fp, quant = measured["fp"], measured["quant"]
    record = RunRecord(model_name=info.name, model_source=info.source, weights_sha256=info.weights_sha256,
                       quant=qmodel.config, calibration=prepared.calibration_meta(), scales=qmodel.scale_set(),
                       seed=args.seed, spec=spec_values(prepared.spec),
                       metrics={"quality": quality, quality_key(quality, "fp"): fp.top1,
                                quality_key(quality, "base"): quant.top1, "n_test": fp.n,
                                "calibration_seconds": prepared.calibration_seconds, "device": str(device),
                                **mean_bits_metrics(qmodel, prepared.calib[0])})
    out = save_run(args.out, record)
    result = {"quality": quality, quality_key(quality, "fp"): fp.top1, quality_key(quality, "quant"): quant.top1,
              "n_test": fp.n,
              "n_calib": sum(len(b) for b in prepared.calib), "calibration_seconds": prepared.calibration_seconds,
              "seconds": time.perf_counter() - start, "out": str(out),
              "allow_float": list(qmodel.config.allow_float)}
    kept = f"  (kept in float: {' '.join(qmodel.config.allow_float)})" if qmodel.config.allow_float else ""
    measure = (f"FP {fp.top1:.2f}%  quantized {quant.top1:.2f}%" if quality == TOP1 else
               f"no classifier: feature cosine to FP {quant.top1:.2f}%")
    emit(args, result, f"{info.name} {qmodel.config.quantizer} {qmodel.config.bits_label}: "
                       f"{measure}  (n_test={fp.n}){kept}  -> {out}")
    return 0

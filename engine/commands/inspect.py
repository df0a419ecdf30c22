"""``inspect``: a scale file's metadata and per-layer table."""
from __future__ import annotations

from ..argtypes import existing_file
from ..cli import emit
from ..provenance import describe
from ..scalefile import load_run


def add_parser(sub) -> None:
    parser = sub.add_parser("inspect", help="show a scale file's metadata and layers")
    parser.add_argument("file", type=existing_file, help="scale or run file (.h5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=run)


def layer_rows(scales) -> list[dict]:
    return [{"name": name, "kind": role, "bits": p.bits, "scheme": p.scheme, "granularity": p.granularity,
             "channels": int(p.scale.size), "scale_min": float(p.scale.min()), "scale_max": float(p.scale.max())}
            for name, role, p in scales.points()]


def run(args) -> int:
    record = load_run(args.file)
    rows = layer_rows(record.scales)
    meta = {"model_name": record.model_name, "model_source": record.model_source,
            "quantizer": record.quant.quantizer, "bits": record.quant.bits_label,
            "attn_bits": record.quant.attention_bits, "allow_float": list(record.quant.allow_float),
            "bit_plan": dict(record.quant.plan),   # the points off the uniform widths (mixed precision)
            "seed": record.seed, "calibration": record.calibration,
            "search": record.search, "metrics": record.metrics, "is_search_run": record.base is not None,
            "n_points": len(rows), "provenance": record.provenance}
    lines = [f"{k}: {v}" for k, v in meta.items() if k != "provenance" and (k != "bit_plan" or v)]
    if record.planning is not None:
        meta["planning"] = {k: v for k, v in record.planning.items() if k != "front"}
        lines.append(f"planning: {meta['planning']}")
    lines.append(f"computed by: {describe(record.provenance)}")
    lines.append(f"{'layer':<34} {'kind':<7} {'bits':>4} {'granularity':<12} {'ch':>5} {'scale min':>11} {'scale max':>11}")
    lines += [f"{r['name']:<34} {r['kind']:<7} {r['bits']:>4} {r['granularity']:<12} {r['channels']:>5} "
              f"{r['scale_min']:>11.4g} {r['scale_max']:>11.4g}" for r in rows]
    emit(args, {**meta, "layers": rows}, "\n".join(lines))
    return 0

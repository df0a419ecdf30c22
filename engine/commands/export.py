"""``export``: a run file's model as ONNX QDQ (checked in onnxruntime) or as AIMET encodings + FP ONNX."""
from __future__ import annotations

import argparse
import logging

from ..argtypes import data_source, device, output_file, positive_int
from ..cli import add_output_args, emit
from ..export import FORMATS, load_export
from ..scalefile import load_run
from ..events import Stage

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="export a run's model: ONNX QDQ or AIMET encodings")
    parser.add_argument("run_file", help="run or scale file (.h5)")
    parser.add_argument("--format", choices=FORMATS, default="onnx-qdq", dest="fmt",
                        help="onnx-qdq: QuantizeLinear/DequantizeLinear pairs with the run's scales (default); "
                             "aimet: the FP ONNX model and its AIMET 1.0.0 encodings (<out>.encodings)")
    parser.add_argument("--out", type=output_file, required=True, help="ONNX file to write (.onnx)")
    parser.add_argument("--base", action="store_true", help="export the run's base scales instead of the refined ones")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                        help="compare the exported model in onnxruntime with the torch model on the run's test "
                             "split (default: when the run's data loads)")
    parser.add_argument("--data", type=data_source,
                        help="the run's data, if it moved (default: as recorded in the run file)")
    parser.add_argument("--device", type=device, default=None,
                        help="device of the torch model in the check (default: auto)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="check batch size (default: the run's)")
    add_output_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    export = load_export()
    record = load_run(args.run_file)
    result = None
    events = export.export_run(record, args.out, args.fmt, use_base=args.base, check=args.check, data=args.data,
                               device=args.device, batch_size=args.batch_size)
    for event in events:
        if isinstance(event, Stage):
            log.info(event.message)
            args.heartbeat.doing(event.message)
        else:
            result = event
    human = (f"{record.model_name} {record.quant.quantizer} {record.quant.bits_label} ({result.scales} scales) -> "
             f"{', '.join(result.files)}: {result.n_quantize_nodes} quantization points, opset {result.opset}")
    if result.parity is not None:
        human += f"\n{result.parity.summary()}"
    emit(args, result.to_dict(), human)
    return 0

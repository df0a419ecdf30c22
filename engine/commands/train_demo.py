"""``train-demo``: retrain a built-in model (digits-vit, digits-swin) from scratch (deterministic, seeded)."""
from __future__ import annotations

from ..argtypes import output_file, positive_int, seed
from ..cli import emit
from ..demo import DEMO_ARCHS, train_demo
from ..models import DEMO_MODEL


def add_parser(sub) -> None:
    parser = sub.add_parser("train-demo", help="train a built-in digits model from scratch")
    parser.add_argument("--arch", choices=tuple(DEMO_ARCHS), default=DEMO_MODEL, help="which built-in model")
    parser.add_argument("--out", type=output_file, required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the training run")
    parser.add_argument("--epochs", type=positive_int, default=40, help="training epochs (the shipped weights' count)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=run)


def run(args) -> int:
    result = train_demo(args.out, seed=args.seed, epochs=args.epochs, arch=args.arch)
    emit(args, {**result, "out": args.out}, f"trained {args.arch}: test {result['test_top1']:.2%}  "
                                            f"held-out {result['heldout_top1']:.2%}  -> {args.out}")
    return 0

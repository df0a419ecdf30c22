"""``train-demo``: retrain the built-in digits-vit from scratch (deterministic, seeded)."""
from __future__ import annotations

from ..argtypes import output_file, seed
from ..cli import emit
from ..demo import train_demo


def add_parser(sub) -> None:
    parser = sub.add_parser("train-demo", help="train the built-in digits ViT from scratch")
    parser.add_argument("--out", type=output_file, required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the training run")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=run)


def run(args) -> int:
    result = train_demo(args.out, seed=args.seed)
    emit(args, {**result, "out": args.out},
         f"trained digits-vit: test {result['test_top1']:.2f}%  held-out {result['heldout_top1']:.2f}%  -> {args.out}")
    return 0

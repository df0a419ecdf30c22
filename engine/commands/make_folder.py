"""``make-folder``: write a generated ImageNet-style folder to smoke-test and benchmark real-size runs offline."""
from __future__ import annotations

from ..argtypes import output_folder, positive_int, seed
from ..cli import emit
from ..data.synthetic import imagenet_synsets, write_image_folder


def add_parser(sub) -> None:
    parser = sub.add_parser("make-folder", help="write a generated ImageNet-style image folder (train/, val/)")
    parser.add_argument("out", type=output_folder, help="folder to write (train/<class>/*, val/<class>/*)")
    parser.add_argument("--classes", type=positive_int, default=10, help="class folders")
    parser.add_argument("--per-class", type=positive_int, default=10, help="images per class in train/ and in val/")
    parser.add_argument("--size", type=positive_int, default=224, help="image side in pixels")
    parser.add_argument("--synsets", nargs="?", const="first", choices=("first", "spread"), default=None,
                        help="name classes by real ImageNet synset ids (the first N in timm's order, or spread "
                             "over all 1,000) instead of class_<i>")
    parser.add_argument("--seed", type=seed, default=0, help="drives the generated images")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(func=run)


def run(args) -> int:
    names = None if args.synsets is None else imagenet_synsets(args.classes, spread=args.synsets == "spread")
    root = write_image_folder(args.out, args.classes, args.per_class, args.size, class_names=names, seed=args.seed)
    n_images = 2 * args.classes * args.per_class
    emit(args, {"out": str(root), "classes": args.classes, "per_class": args.per_class, "size": args.size,
                "images": n_images, "synsets": names},
         f"wrote {n_images} images of {args.size}x{args.size} px in {args.classes} classes -> {root}")
    return 0

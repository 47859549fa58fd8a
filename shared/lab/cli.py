"""``isplitee``: the offline tool (train a multi-exit model, inspect it, simulate the bandit).

Heavy imports happen inside each command so ``isplitee --help`` is instant and a Pi without the
``[train]`` extra still gets a clear message instead of an ImportError trace.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shared.artefact import CHECK_IMAGES, SUFFIX
from shared.lab.demo import add_demo
from shared.lab.simulate_cli import add_simulate
from shared.meta import DEFAULT_EXIT_BLOCKS

if TYPE_CHECKING:
    from shared.lab.recipe import TrainRecipe

__all__ = ["main"]


def _csv(convert, example: str):
    """An argparse type for comma-separated values, e.g. ``3,6,9``."""

    def parse(text: str) -> tuple:
        try:
            return tuple(convert(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated values like {example}, got {text!r}"
            ) from None

    return parse


_blocks = _csv(int, "3,6,9")
_floats = _csv(float, "1,1,0.5")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a multi-exit MobileNetV2 and write a checkpoint",
        description="Train every exit jointly, calibrate each exit's temperature on the held-out "
        "validation split, print a per-exit table on the test split and write the checkpoint.",
    )
    p.add_argument("--dataset", default="digits", help="digits | cifar10[:ROOT] | imagefolder:PATH")
    p.add_argument("--input-size", type=int, default=32, help="square input side (default 32)")
    p.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width multiplier")
    p.add_argument("--exit-blocks", type=_blocks, default=DEFAULT_EXIT_BLOCKS)
    p.add_argument("--pretrained", choices=("none", "imagenet"), default="none")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--lr-backbone", type=float, help="default 1.5e-4 with imagenet weights, 2e-3 without"
    )
    p.add_argument("--lr-exits", type=float, default=1e-2)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--exit-weights", type=_floats, help="loss weight per arm, e.g. 1,1,1,1,1,1,1")
    p.add_argument(
        "--augment",
        type=float,
        default=0.5,
        help="share of training images given a random noise/blur distortion (default 0.5, the "
        "recommended recipe; the paper's is 0)",
    )
    p.add_argument(
        "--calibrate-on",
        choices=("clean", "distorted"),
        default="distorted",
        help="fit exit temperatures on clean validation images (the paper), or on them under "
        "every paper noise and blur level too (default)",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="train, and calibrate under each condition, on at most this many images (smoke runs)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, default=Path("models/digits.pt"))
    p.add_argument(
        "--no-export",
        action="store_true",
        help="write the checkpoint only, not the deploy artefact beside it (OUT.isplitee)",
    )
    p.set_defaults(func=_cmd_train)


def _refuse_artefact_out(out: Path) -> None:
    """--out names the checkpoint: the artefact is written beside it, never over it."""
    if out.suffix == SUFFIX:
        raise ValueError(
            f"--out {out}: names the checkpoint (.pt); its artefact is written beside it as "
            f"{out.with_suffix(SUFFIX).name}, so give --out {out.with_suffix('.pt')}"
        )


def _recipe(args: argparse.Namespace) -> TrainRecipe:
    """The ``train`` flags as a recipe; the backbone's rate defaults by its starting weights."""
    from shared.lab.recipe import TrainConfig, TrainRecipe

    lr_backbone = args.lr_backbone or (1.5e-4 if args.pretrained == "imagenet" else 2e-3)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_backbone=lr_backbone,
        lr_exits=args.lr_exits,
        weight_decay=args.weight_decay,
        exit_weights=args.exit_weights,
        augment=args.augment,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return TrainRecipe(
        dataset=args.dataset,
        input_size=args.input_size,
        width=args.width,
        exit_blocks=args.exit_blocks,
        pretrained=args.pretrained,
        calibrate_on=args.calibrate_on,
        limit=args.limit,
        train=config,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    _refuse_artefact_out(args.out)
    import torch

    from shared.lab.training import train_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    train_checkpoint(_recipe(args), args.out, export=not args.no_export)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the deploy artefact a node and a worker run without torch",
        description="Export every split's edge and cloud graph of a checkpoint to one file, "
        "check each against PyTorch on the checkpoint's held-out images (outputs within 1e-4, "
        "predictions equal) and write it with the checkpoint's metadata and hash. A split that "
        "fails is named and nothing is written.",
    )
    p.add_argument("model", type=Path, help="the checkpoint (.pt)")
    p.add_argument("--out", type=Path, help=f"the artefact (default: MODEL with {SUFFIX})")
    p.add_argument(
        "--images",
        type=int,
        default=CHECK_IMAGES,
        help=f"held-out images to check each graph on (default {CHECK_IMAGES})",
    )
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from shared.checkpoint import load_checkpoint
    from shared.lab.export import held_out, write_deploy_artefact

    if args.images < 1:
        raise ValueError(f"--images should be at least 1, got {args.images}")
    ckpt = load_checkpoint(args.model)
    out = args.out or args.model.with_suffix(SUFFIX)
    write_deploy_artefact(ckpt, out, held_out(ckpt, args.images))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a checkpoint's metadata, per-exit cost and payload")
    p.add_argument("model", type=Path)
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from shared.lab.report import format_table
    from shared.model_file import is_checkpoint, load_model
    from shared.protocol import ENCODINGS
    from shared.wire import AUTO, FALLBACK, wire_encodings

    ckpt = load_model(args.model)
    meta = ckpt.meta
    kind = "checkpoint" if is_checkpoint(ckpt) else "artefact"
    print(f"{kind:<12} {ckpt.path}")
    print(f"hash         {ckpt.hash}")
    print(f"arch         {meta.arch} width {meta.width_mult:g}, input {meta.input_size}px")
    print(
        f"classes      {meta.num_classes}: {', '.join(meta.class_names[:12])}"
        + (" ..." if meta.num_classes > 12 else "")
    )
    print(f"normalise    mean {meta.mean}, std {meta.std}")
    print(f"dataset      {meta.dataset or '?'} (split seed {meta.split_seed})")
    print(f"temperatures {', '.join(f'{t:.2f}' for t in meta.arm_temperatures())}")
    for key, value in sorted(meta.notes.items()):
        print(f"note         {key} = {value}")
    prof = ckpt.profile
    auto = wire_encodings(AUTO, meta.exit_blocks, meta.wire_encodings)
    rows = []
    for block in meta.arm_blocks:
        bp = prof.block(block)
        rows.append(
            [
                "final" if block == meta.arm_blocks[-1] else str(block),
                f"{prof.macs_to_exit(block) / 1e6:.2f}",
                f"{100 * prof.macs_to_exit(block) / prof.total_macs:.1f}",
                "x".join(str(d) for d in bp.out_shape),
                *(str(bp.payload_bytes(e)) for e in ENCODINGS),
                auto.get(block, "-"),
            ]
        )
    print()
    encoding_heads = [f"{e} B" for e in ENCODINGS]
    print(
        format_table(
            ["exit", "MFLOPs", "% of full", "activation", *encoding_heads, "auto sends"], rows
        )
    )
    if meta.wire_encodings is None:
        print(f"\nThis checkpoint holds no encoding check: 'auto' sends {FALLBACK}.")
    print("\nMFLOPs are multiply-accumulates up to and including the exit head.")
    return 0


def _add_check_encodings(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-encodings",
        help="measure which wire encodings a checkpoint's exits tolerate (what 'auto' sends)",
        description="Runs the checkpoint's held-out validation images through the wire codec "
        "at every exit, as training does, and prints per encoding the share of final "
        "predictions unchanged and the accuracy change. --out writes a copy that carries the "
        "result (a new hash: give the cloud worker the same file).",
    )
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, help="write the checkpoint with the result here")
    p.set_defaults(func=_cmd_check_encodings)


def _cmd_check_encodings(args: argparse.Namespace) -> int:
    if args.out:
        _refuse_artefact_out(args.out)
    from shared.checkpoint import load_checkpoint, save_checkpoint
    from shared.lab.datasets import load_dataset
    from shared.lab.export import write_deploy_artefact
    from shared.lab.report import format_table
    from shared.lab.training import calibration_distortions
    from shared.lab.wire_check import check_encodings
    from shared.wire import MAX_ACCURACY_DROP, MIN_AGREEMENT

    ckpt = load_checkpoint(args.model)
    meta = ckpt.meta
    if not meta.dataset:
        raise ValueError(f"{args.model} does not say which dataset it was trained on")
    val = load_dataset(meta.dataset, meta.input_size, meta.split_seed).val
    distortions = calibration_distortions(meta.notes.get("calibrated_on", "clean"))
    checks = check_encodings(ckpt.model, val, mean=meta.mean, std=meta.std, distortions=distortions)
    encodings = list(checks[0].agreement)
    rows = [
        [
            str(c.block),
            *(
                f"{100 * c.agreement[e]:.1f} / {0.0 - 100 * c.accuracy_drop[e] + 0.0:+.2f}"
                for e in encodings
            ),
            c.chosen,
        ]
        for c in checks
    ]
    print(
        f"{len(val)} validation images x {len(distortions)} condition(s); cells: % of final "
        "predictions unchanged / accuracy change (points), against the fp32 activation"
    )
    print(format_table(["exit", *encodings, "auto sends"], rows))
    print(
        f"\nauto sends the smallest encoding with >= {100 * MIN_AGREEMENT:g} % unchanged and "
        f"at most {100 * MAX_ACCURACY_DROP:g} points lost"
    )
    if args.out:
        new = meta.model_copy(update={"wire_encodings": tuple(c.chosen for c in checks)})
        digest = save_checkpoint(args.out, ckpt.model, new)
        print(f"wrote {args.out} (hash {digest[:12]}; was {ckpt.short_hash})")
        write_deploy_artefact(load_checkpoint(args.out), args.out.with_suffix(SUFFIX))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("isplitee")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isplitee",
        description="Split computing with early exits: train, inspect, simulate; the live demo.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_info(sub)
    _add_export(sub)
    _add_check_encodings(sub)
    add_simulate(sub)
    add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    from shared.errors import IsplitEEError

    try:
        return int(args.func(args) or 0)
    except (IsplitEEError, ValueError) as exc:
        print(f"isplitee {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `isplitee info ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

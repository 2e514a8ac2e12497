"""The command line: ``python -m mae_course <command>`` (or ``mae-course <command>``).

Errors about the user's input (a wrong path, a bad value, an image size that does not fit
the patch size) are printed as one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import MAECourseError
from .masking import SAMPLINGS
from .pretrain import AMP_MODES, PretrainConfig, pretrain
from .registry import MODEL_CONFIGS
from .transforms import AUGMENTATIONS

_D = PretrainConfig()  # the defaults, shown in --help


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"decoder_depth\": 1}}', got {text}")
    return value


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain an MAE (default: a small one on the built-in data, a few minutes on a CPU)",
        description="Pretrain a masked autoencoder. Writes checkpoints, log.jsonl and reconstruction figures to --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=_D.data,
        help="'builtin' (generated, no download) or an ImageFolder path (with train/ inside, or class folders)",
    )
    g.add_argument(
        "--image-size", type=int, default=_D.image_size, help="input side in pixels; a multiple of the patch size"
    )
    g.add_argument("--subset", type=int, default=_D.subset, help="use only the first N training images")
    g.add_argument(
        "--augment", choices=AUGMENTATIONS, default=_D.augment, help="pretraining augmentation (paper Table 1e)"
    )
    g.add_argument(
        "--crop-min-scale", type=float, default=_D.crop_min_scale, help="smallest area fraction of RandomResizedCrop"
    )
    g.add_argument(
        "--num-workers",
        type=int,
        default=_D.num_workers,
        help="DataLoader workers (default: 0 for built-in data, else one per spare core, at most 8)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list(MODEL_CONFIGS), default=_D.model)
    g.add_argument(
        "--model-overrides",
        type=_json_object,
        default={},
        metavar="JSON",
        help="constructor overrides, e.g. '{\"decoder_depth\": 1}'",
    )
    g.add_argument(
        "--norm-pix-loss",
        action=argparse.BooleanOptionalAction,
        default=_D.norm_pix_loss,
        help="predict per-patch normalized pixels",
    )
    g.add_argument("--mask-ratio", type=float, default=_D.mask_ratio)
    g.add_argument("--mask-sampling", choices=SAMPLINGS, default=_D.mask_sampling)
    g.add_argument("--mask-token-in-encoder", action="store_true", help="the 'encoder w/ [M]' baseline (Table 1c)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=_D.epochs)
    g.add_argument("--warmup-epochs", type=float, default=_D.warmup_epochs)
    g.add_argument("--batch-size", type=int, default=_D.batch_size, help="images per process per step")
    g.add_argument("--accum-iter", type=int, default=_D.accum_iter, help="gradient accumulation steps")
    g.add_argument("--blr", type=float, default=_D.blr, help="base lr: lr = blr x effective batch / 256")
    g.add_argument("--lr", type=float, default=_D.lr, help="absolute lr (overrides --blr)")
    g.add_argument("--min-lr", type=float, default=_D.min_lr)
    g.add_argument("--weight-decay", type=float, default=_D.weight_decay)
    g.add_argument("--betas", type=float, nargs=2, default=_D.betas, metavar=("B1", "B2"))
    g.add_argument(
        "--amp",
        choices=AMP_MODES,
        default=_D.amp,
        help="mixed precision: auto = bf16 (or fp16 + scaler) on GPU, none on CPU",
    )
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default=_D.output_dir)
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue a run (default: OUTPUT_DIR/checkpoint-last.pth)",
    )
    g.add_argument("--overwrite", action="store_true", help="start over in an output dir that already holds a run")
    g.add_argument("--seed", type=int, default=_D.seed)
    g.add_argument("--device", default=_D.device, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--log-every", type=int, default=_D.log_every, help="optimizer steps between log lines")
    g.add_argument("--save-every", type=int, default=_D.save_every, help="epochs between checkpoints")
    g.add_argument("--vis-images", type=int, default=_D.vis_images, help="images in the reconstruction figure")
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k not in ("command", "func")}
    values["betas"] = tuple(values["betas"])
    summary = pretrain(PretrainConfig(**values))
    if summary.get("first_loss") is not None:
        print(
            f"done: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}; "
            f"reconstructions: {summary['figure']}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mae_course", description="Masked Autoencoders, from the first patch to ImageNet."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    _add_pretrain(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MAECourseError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(f"mae_course {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

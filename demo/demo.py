#!/usr/bin/env python
"""RetinaMask demo: predict instance masks on images, folders, a video or a webcam.

    python demo/demo.py --input photo.jpg                      # the quickstart's trained model
    python demo/demo.py --input photos/ --json --cutouts       # + COCO results, RGBA cut-outs
    python demo/demo.py --input photos/ --cutouts --upright    # cut-outs turned upright
    python demo/demo.py --config-file CFG.yaml --input 'photos/**/*.jpg' \\
        --output out/ --opts MODEL.WEIGHTS model_final.pth

Writes into ``--output`` (default ``output/demo``): one drawing per image (same name as the
input), ``results.json`` with ``--json`` and ``cutouts/`` with ``--cutouts``. Files that fail
are reported one by one and the others still processed; the exit code is 0 when every input
worked, 1 when any failed, 2 when nothing could start (bad options, no model, no inputs).

This file is the command line and the model's config; the work is next to it: image_demo.py
(images), plan_outputs.py (the names of their outputs), video_demo.py (a video or the webcam).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import yaml
from detectron2.config import CfgNode

from retinamask_d2.cli import USER_ERRORS, UsageError, fall_back_to_cpu, require_weights
from retinamask_d2.data.image_io import DEFAULT_MAX_MEGAPIXELS
from retinamask_d2.predictor import PRECISIONS, RetinaMaskPredictor, load_config

# The demo's own modules, next to it: images, their output names, video.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_demo  # noqa: E402
import video_demo  # noqa: E402
from plan_outputs import DEFAULT_OUTPUT  # noqa: E402

# Where `make quickstart` leaves its trained model; used when no --config-file is given.
QUICKSTART_DIR = Path(__file__).resolve().parents[1] / "output" / "quickstart"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="RetinaMask demo: instance masks on images, a video or a webcam.",
    )
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        help="model config; default: the quickstart's trained model in "
        f"{_shown(QUICKSTART_DIR)} (config.yaml and model_final.pth)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, folders (their image files) or glob patterns such as 'dir/**/*.jpg'",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam (camera 0)")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help=f"a folder (default {DEFAULT_OUTPUT}), or a file name for one input image or a "
        "video (.mp4/.avi); for --webcam, a video file (default: show a window)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="FILE",
        help="also write COCO results (RLE masks, XYWH boxes, scores, category ids, file names); "
        "default file: results.json in the output folder",
    )
    parser.add_argument(
        "--cutouts",
        nargs="?",
        const="",
        metavar="FOLDER",
        help="also write one RGBA PNG per instance, cropped to its mask, background transparent; "
        "default folder: cutouts/ in the output folder",
    )
    parser.add_argument(
        "--upright",
        action="store_true",
        help="with --cutouts: turn each instance so that its long axis is horizontal, cropped "
        "tight (a tilted bar becomes a strip): the model's angle with MASK_ROI oriented, else "
        "the long side of the mask's minimum-area rectangle",
    )
    parser.add_argument(
        "--class-agnostic",
        action="store_true",
        help="NMS across classes: one detection per object "
        "(MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS True)",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        metavar="SCORE",
        help="keep detections scoring at least this (default 0.5)",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="fp32",
        help="run the model under autocast in bf16 or fp16 (fp16: GPUs only); default fp32",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that exist already"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="images per forward pass (default 1)"
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        metavar="MP",
        help="skip larger images: their full-size masks would need too much memory (default: "
        f"the config's INPUT.MAX_IMAGE_MEGAPIXELS, {DEFAULT_MAX_MEGAPIXELS:g} unless set)",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        _check_args(args)
        cfg = setup_cfg(args)
        make_predictor = partial(build_predictor, cfg, args)
        if args.input is not None:
            return image_demo.run_images(args, make_predictor, _files_read(args, cfg))
        return video_demo.run_stream(args, make_predictor, DEFAULT_OUTPUT)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise UsageError(
            f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_megapixels is not None and args.max_megapixels <= 0:
        raise UsageError(f"--max-megapixels must be positive, got {args.max_megapixels}")
    if args.input is None and (args.json is not None or args.cutouts is not None):
        raise UsageError("--json and --cutouts work with --input images, not video or webcam")
    if args.upright and args.cutouts is None:
        raise UsageError("--upright turns the cut-outs: use it with --cutouts")


# ---------------------------------------------------------------------------------------------
# The model


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The config of the model to run: --config-file (or the quickstart's), then --opts and the
    options that stand for config keys."""
    if args.config_file is not None:
        config_file, weights = Path(args.config_file), None
        if not config_file.is_file():
            raise UsageError(f"--config-file {config_file}: no such file")
    else:
        config_file, weights = QUICKSTART_DIR / "config.yaml", QUICKSTART_DIR / "model_final.pth"
        if not (config_file.is_file() and weights.is_file()):
            raise UsageError(_no_model_message())
    try:
        cfg = load_config(config_file, weights, args.opts)
    except (KeyError, ValueError, AssertionError, TypeError, OSError, yaml.YAMLError) as e:
        source = f"{config_file} or --opts" if args.opts else str(config_file)
        raise UsageError(f"bad config in {source}: {e}") from None
    if args.class_agnostic:
        cfg.MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS = True
    if args.max_megapixels is not None:
        cfg.INPUT.MAX_IMAGE_MEGAPIXELS = args.max_megapixels
    fall_back_to_cpu(cfg)
    require_weights(cfg, config_file)
    cfg.freeze()
    return cfg


def _no_model_message() -> str:
    return (
        f"no --config-file given, and the quickstart's trained model is not in "
        f"{_shown(QUICKSTART_DIR)} (config.yaml and model_final.pth). Either train it first "
        "with `make quickstart`, or name a config and its weights:\n"
        "  python demo/demo.py --config-file CONFIG.yaml --input IMAGES... "
        "--opts MODEL.WEIGHTS path/to/model_final.pth"
    )


def build_predictor(cfg: CfgNode, args: argparse.Namespace) -> RetinaMaskPredictor:
    """The predictor; it applies --confidence-threshold (the model keeps only those detections)."""
    return RetinaMaskPredictor(
        cfg, confidence_threshold=args.confidence_threshold, precision=args.precision
    )


def _files_read(args: argparse.Namespace, cfg: CfgNode) -> dict[str, Path]:
    """The files besides the inputs that the run reads: no output may replace them."""
    config_file = Path(args.config_file) if args.config_file else QUICKSTART_DIR / "config.yaml"
    read = {"the config": config_file}
    if "://" not in cfg.MODEL.WEIGHTS:
        read["the weights"] = Path(cfg.MODEL.WEIGHTS)
    return read


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())

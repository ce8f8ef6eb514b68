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
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from detectron2.config import CfgNode
from detectron2.structures import Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode
from PIL import Image
from tqdm import tqdm

from retinamask_d2.data.image_io import (
    DEFAULT_MAX_MEGAPIXELS,
    IMAGE_SUFFIXES,
    ImageReadError,
    read_image,
)
from retinamask_d2.evaluation.coco_results import coco_results
from retinamask_d2.predictor import PRECISIONS, RetinaMaskPredictor, load_config
from retinamask_d2.visualization.cutouts import make_cutouts
from retinamask_d2.visualization.draw import draw_instances

# Where `make quickstart` leaves its trained model; used when no --config-file is given.
QUICKSTART_DIR = Path(__file__).resolve().parents[1] / "output" / "quickstart"
DEFAULT_OUTPUT = Path("output") / "demo"
# Drawings keep the input's name when Pillow writes that format; other inputs get ".png" added.
WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
WINDOW_NAME = "RetinaMask"


class UsageError(Exception):
    """A problem that stops the whole run before any input is processed (exit code 2)."""


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
        help="with --cutouts: turn each instance so that the long side of its mask's "
        "minimum-area rectangle is horizontal, cropped tight (a tilted bar becomes a strip)",
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
        default=DEFAULT_MAX_MEGAPIXELS,
        metavar="MP",
        help=f"refuse larger images: their full-size masks would need too much memory "
        f"(default {DEFAULT_MAX_MEGAPIXELS:g})",
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
        if args.input is not None:
            return run_images(args, cfg)
        return run_stream(args, cfg)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> None:
    if not 0.0 <= args.confidence_threshold <= 1.0:
        raise UsageError(
            f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_megapixels <= 0:
        raise UsageError(f"--max-megapixels must be positive, got {args.max_megapixels}")
    if args.input is None and (args.json is not None or args.cutouts is not None):
        raise UsageError("--json and --cutouts work with --input images, not video or webcam")
    if args.upright and args.cutouts is None:
        raise UsageError("--upright turns the cut-outs: use it with --cutouts")


# ---------------------------------------------------------------------------------------------
# The model


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """The config of the model to run: --config-file (or the quickstart's), then --opts."""
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
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        note = f"note: MODEL.DEVICE is {cfg.MODEL.DEVICE} but CUDA is unavailable; using the CPU"
        print(note, file=sys.stderr)
        cfg.MODEL.DEVICE = "cpu"
    _check_weights(cfg.MODEL.WEIGHTS, config_file)
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


def _check_weights(weights: str, config_file: Path) -> None:
    if not weights:
        hint = ""
        if (config_file.parent / "model_final.pth").is_file():
            hint = f" (e.g. --opts MODEL.WEIGHTS {config_file.parent / 'model_final.pth'})"
        raise UsageError(
            f"MODEL.WEIGHTS is empty in {config_file}: the model would be untrained. "
            f"Pass the trained weights with --opts MODEL.WEIGHTS FILE{hint}"
        )
    if "://" not in weights and not Path(weights).is_file():
        raise UsageError(f"MODEL.WEIGHTS {weights}: no such file")


def build_predictor(cfg: CfgNode, args: argparse.Namespace) -> RetinaMaskPredictor:
    try:
        return RetinaMaskPredictor(
            cfg, confidence_threshold=args.confidence_threshold, precision=args.precision
        )
    except Exception as e:  # a checkpoint that does not load is a setup problem, not a bug
        raise UsageError(f"cannot load the model from {cfg.MODEL.WEIGHTS}: {e}") from e


def keep_confident(instances: Instances, threshold: float) -> Instances:
    """The model already applies the threshold; this also covers models that ignore the key."""
    return instances[instances.scores >= threshold]


# ---------------------------------------------------------------------------------------------
# Images


@dataclass
class ImageJob:
    """One input image and the files it will produce."""

    path: Path
    name: str  # relative to the inputs' common folder, "/"-separated: the JSON file_name
    image_id: int
    drawing: Path
    cutout_dir: Path | None
    cutout_prefix: str


@dataclass
class Report:
    """What happened to each input, for the summary and the exit code."""

    succeeded: int = 0
    instances: int = 0
    cutouts: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        tqdm.write(f"error: {message}", sys.stderr)


def run_images(args: argparse.Namespace, cfg: CfgNode) -> int:
    report = Report()
    paths = expand_inputs(args.input, report)
    if not paths:
        raise UsageError("no input images: " + "; ".join(report.failures))
    jobs, json_path = plan_image_outputs(paths, args)
    jobs = [job for job in jobs if _outputs_free(job, args.overwrite, report)]
    predictor = build_predictor(cfg, args) if jobs else None
    results: list[dict] = []
    start = time.perf_counter()
    with tqdm(total=len(jobs), unit="image", disable=None) as progress:
        for i in range(0, len(jobs), args.batch_size):
            batch = jobs[i : i + args.batch_size]
            for job, image, instances in _predict_chunk(predictor, batch, args, report):
                instances = keep_confident(instances, args.confidence_threshold)
                try:
                    results += _write_image_outputs(job, image, instances, predictor, args, report)
                    report.succeeded += 1
                    report.instances += len(instances)
                except Exception as e:
                    report.fail(f"{job.path}: cannot write its outputs ({e})")
            progress.update(len(batch))
    if json_path is not None:
        _write_bytes(json_path, json.dumps(results).encode(), args.overwrite)
    _print_image_summary(report, len(paths), time.perf_counter() - start, jobs, json_path, args)
    return 1 if report.failures else 0


def expand_inputs(patterns: list[str], report: Report) -> list[Path]:
    """Image files named by --input: files as given; folders and globs by image suffix."""
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file())
            what = f"folder {pattern}"
        elif path.exists():
            paths.append(path)
            continue
        elif glob.has_magic(pattern):
            candidates = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            candidates = [p for p in candidates if p.is_file()]
            what = f"pattern {pattern}"
        else:
            report.fail(f"{pattern}: no such file or folder")
            continue
        images = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES]
        others = len(candidates) - len(images)
        if not images:
            report.fail(
                f"{what} has no image files ({' '.join(IMAGE_SUFFIXES)})"
                + (f"; {others} other file(s) ignored" if others else "")
            )
        elif others:
            tqdm.write(
                f"note: {what}: ignored {others} file(s) without an image suffix", sys.stderr
            )
        paths += images
    seen: set[Path] = set()
    unique = []
    for p in paths:  # first occurrence wins
        resolved = p.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(p)
    return unique


def plan_image_outputs(
    paths: list[Path], args: argparse.Namespace
) -> tuple[list[ImageJob], Path | None]:
    """Name every output before the model loads, so clashes stop the run before any work.

    Outputs never replace an input, nor one another: two inputs whose drawings or cut-outs
    would get the same name (``a.gif`` drawn as ``a.gif.png`` next to an input ``a.gif.png``)
    get distinct ones (``a.gif_2.png``); an output that would replace an input stops the run.
    """
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    output_is_file = output.suffix.lower() in WRITABLE_SUFFIXES and not output.is_dir()
    if output_is_file and len(paths) > 1:
        raise UsageError(
            f"--output {output} is a file name but {len(paths)} images were given; "
            "pass a folder instead"
        )
    folder = output.parent if output_is_file else output
    stem_base = output.stem if output_is_file else ""
    cutout_root = None
    if args.cutouts is not None:
        default = folder / (f"{stem_base}_cutouts" if output_is_file else "cutouts")
        cutout_root = Path(args.cutouts) if args.cutouts else default
    inputs = {_key(p): p for p in paths}
    json_path = None
    if args.json is not None:
        default = output.with_suffix(".json") if output_is_file else folder / "results.json"
        json_path = Path(args.json) if args.json else default
        if json_path.is_dir():
            raise UsageError(f"--json {json_path} is a folder; name a file")
        if _key(json_path) in inputs:
            raise UsageError(f"--json {json_path} is an input image; name another file")
        if json_path.exists() and not args.overwrite:
            raise UsageError(f"{json_path} exists already; pass --overwrite to replace it")

    names = _relative_names(paths)
    prefixes = _cutout_prefixes(names)
    taken = {} if json_path is None else {_key(json_path): "the --json file"}
    taken_prefixes: dict[str, set[str]] = {}  # cut-out folder -> prefixes used there
    jobs = []
    for image_id, (path, name) in enumerate(zip(paths, names), start=1):
        drawing = output if output_is_file else folder / name
        if drawing.suffix.lower() not in WRITABLE_SUFFIXES:
            drawing = drawing.with_name(drawing.name + ".png")
        if _key(drawing) in inputs:
            raise UsageError(
                f"the drawing of {path} would replace the input {inputs[_key(drawing)]}; "
                "choose another --output"
            )
        drawing = _distinct(drawing, lambda p: _key(p) in taken or _key(p) in inputs)
        taken[_key(drawing)] = str(path)
        cutout_dir, prefix = None, prefixes[name]
        if cutout_root is not None:
            cutout_dir = cutout_root / Path(name).parent
            used = taken_prefixes.setdefault(_key(cutout_dir), set())
            prefix = _distinct_prefix(prefix, used)
            used.add(prefix.lower())
        job = ImageJob(path, name, image_id, drawing, cutout_dir, prefix)
        _refuse_cutouts_over_inputs(job, paths)
        jobs.append(job)
    return jobs, json_path


def _key(path: Path) -> str:
    """What makes two paths one file: absolute, symlinks resolved, case folded (a file system
    that ignores case would make ``A.png`` and ``a.png`` one file)."""
    return str(path.resolve()).lower()


def _distinct(path: Path, is_taken) -> Path:
    """``path``, or ``<stem>_2<suffix>``, ``_3``, ... when that is taken."""
    candidate, number = path, 2
    while is_taken(candidate):
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
        number += 1
    return candidate


def _distinct_prefix(prefix: str, used: set[str]) -> str:
    candidate, number = prefix, 2
    while candidate.lower() in used:
        candidate = f"{prefix}-{number}"
        number += 1
    return candidate


def _refuse_cutouts_over_inputs(job: ImageJob, paths: list[Path]) -> None:
    """Cut-out names (and, with --overwrite, the stale ones removed) must not be an input's."""
    if job.cutout_dir is None:
        return
    pattern = _cutout_pattern(job.cutout_prefix)
    for path in paths:
        if _key(path.parent) == _key(job.cutout_dir) and pattern.fullmatch(path.name):
            raise UsageError(
                f"the cut-outs of {job.path} would be named like the input {path}; choose "
                "another --cutouts folder"
            )


def _relative_names(paths: list[Path]) -> list[str]:
    """Paths relative to the inputs' common folder, so inputs from subfolders do not collide.

    Inputs with no common folder below the file system's root are named by their last folders
    instead (as few as keep them apart), not by their whole absolute paths.
    """
    resolved = [p.resolve() for p in paths]
    try:
        root = Path(os.path.commonpath([p.parent for p in resolved]))
    except ValueError:  # different drives
        root = None
    if root is not None and root.parent != root:
        return [p.relative_to(root).as_posix() for p in resolved]
    for depth in range(2, max(len(p.parts) for p in resolved) + 1):
        tails = [Path(*p.parts[-depth:]).as_posix() for p in resolved]
        if len({t.lower() for t in tails}) == len(tails):
            return tails
    return [p.relative_to(p.anchor).as_posix() for p in resolved]


def _cutout_prefixes(names: list[str]) -> dict[str, str]:
    """Cut-outs are named after the image's stem; photo.jpg and photo.png keep their suffix."""
    stems = [str(Path(n).with_suffix("")) for n in names]
    prefixes = {}
    for name, stem in zip(names, stems):
        unique = stems.count(stem) == 1
        prefixes[name] = Path(stem if unique else name.replace(".", "_")).name
    return prefixes


def _outputs_free(job: ImageJob, overwrite: bool, report: Report) -> bool:
    if overwrite:
        return True
    if job.drawing.exists():
        report.fail(f"{job.path}: output {job.drawing} exists already; pass --overwrite")
        return False
    existing = next(_existing_cutouts(job), None)
    if existing is not None:
        report.fail(f"{job.path}: cut-outs such as {existing} exist already; pass --overwrite")
        return False
    return True


def _existing_cutouts(job: ImageJob):
    if job.cutout_dir is None or not job.cutout_dir.is_dir():
        return iter(())
    pattern = _cutout_pattern(job.cutout_prefix)
    return (p for p in sorted(job.cutout_dir.iterdir()) if pattern.fullmatch(p.name))


def _cutout_pattern(prefix: str) -> re.Pattern:
    """File names of the cut-outs of an image whose cut-outs are named after ``prefix``."""
    return re.compile(re.escape(prefix) + r"_\d{3,}_.+_\d\.\d{3}\.png")


def _predict_chunk(predictor: RetinaMaskPredictor, jobs: list[ImageJob], args, report: Report):
    """(job, RGB image, instances) of the jobs whose image reads and predicts; others reported.

    The chunk goes through the model in one pass; if that fails, image by image, so that the
    error is reported against the image that caused it.
    """
    loaded = []
    for job in jobs:
        try:
            loaded.append((job, read_image(job.path, "RGB", args.max_megapixels)))
        except ImageReadError as e:
            report.fail(str(e))
        except Exception as e:
            report.fail(f"{job.path}: cannot read it ({type(e).__name__}: {e})")
    if len(loaded) > 1:
        try:
            predictions = predictor.predict_batch([image for _, image in loaded], format="RGB")
            return [(job, image, inst) for (job, image), inst in zip(loaded, predictions)]
        except Exception:
            pass  # found and reported image by image below
    done = []
    for job, image in loaded:
        try:
            done.append((job, image, predictor.predict(image, format="RGB")))
        except Exception as e:
            report.fail(f"{job.path}: prediction failed ({type(e).__name__}: {e})")
    return done


def _write_image_outputs(
    job: ImageJob, image: np.ndarray, instances: Instances, predictor, args, report: Report
) -> list[dict]:
    """Write the drawing and cut-outs of one image; return its COCO results."""
    metadata = predictor.metadata
    drawing = draw_instances(image, instances, metadata)
    job.drawing.parent.mkdir(parents=True, exist_ok=True)
    _write_image(job.drawing, drawing, args.overwrite)
    if job.cutout_dir is not None:
        job.cutout_dir.mkdir(parents=True, exist_ok=True)
        for stale in list(_existing_cutouts(job)):  # only reached with --overwrite
            stale.unlink()
        for cutout in make_cutouts(image, instances, metadata, upright=args.upright):
            _write_image(job.cutout_dir / cutout.file_name(job.cutout_prefix), cutout.rgba, True)
            report.cutouts += 1
    return (
        coco_results(instances, job.image_id, job.name, metadata) if args.json is not None else []
    )


def _write_image(path: Path, array: np.ndarray, overwrite: bool) -> None:
    """Save with Pillow; without ``overwrite`` the file must not exist (checked atomically)."""
    save_format = Image.registered_extensions()[path.suffix.lower()]
    with open(path, "wb" if overwrite else "xb") as f:
        Image.fromarray(array).save(f, format=save_format)


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb" if overwrite else "xb") as f:
        f.write(data)


def _print_image_summary(report: Report, total: int, seconds: float, jobs, json_path, args) -> None:
    failed = len(report.failures)
    print(
        f"{report.succeeded} of {total} image(s) done in {seconds:.1f} s, {failed} problem(s); "
        f"{report.instances} instance(s) with score >= {args.confidence_threshold:g}"
    )
    if report.succeeded:
        folders = sorted({str(job.drawing.parent) for job in jobs})
        print(f"  drawings: {', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''}")
        if args.cutouts is not None:
            cutout_dirs = sorted({str(job.cutout_dir) for job in jobs})
            print(f"  cut-outs: {report.cutouts} in {', '.join(cutout_dirs[:3])}")
        if json_path is not None:
            print(f"  COCO results: {json_path}")
    if report.failures:
        print("problems:")
        for message in report.failures:
            print(f"  {message}")


# ---------------------------------------------------------------------------------------------
# Video and webcam


def run_stream(args: argparse.Namespace, cfg: CfgNode) -> int:
    """Draw the predictions on every frame of --video-input or the webcam."""
    output = _stream_output(args)
    if output is not None and output.exists() and not args.overwrite:
        print(f"error: {output} exists already; pass --overwrite", file=sys.stderr)
        return 1
    source = "webcam 0" if args.webcam else args.video_input
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        capture.release()
        print(f"error: {source}: cannot be opened as a video", file=sys.stderr)
        return 1
    predictor = build_predictor(cfg, args)
    frames = _stream_frames(capture, predictor, args, output, source)
    print(f"{frames} frame(s) of {source} done" + (f"; video: {output}" if output else ""))
    return 0 if frames else 1


def _stream_output(args: argparse.Namespace) -> Path | None:
    """The video file to write: --output as a .mp4/.avi name, or <stem>.mp4 in a folder."""
    if args.output is None and args.webcam:
        if not _has_display():
            raise UsageError("--webcam without --output shows a window, but there is no display")
        return None
    output = Path(args.output) if args.output else DEFAULT_OUTPUT
    if output.suffix.lower() in VIDEO_CODECS:
        return output
    if output.suffix and not output.is_dir():
        raise UsageError(f"--output {output}: use a .mp4 or .avi file name, or a folder")
    return output / ("webcam.mp4" if args.webcam else Path(args.video_input).stem + ".mp4")


def _stream_frames(capture, predictor, args, output: Path | None, source: str) -> int:
    visualizer = VideoVisualizer(predictor.metadata, ColorMode.IMAGE)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    frames = 0
    try:
        with tqdm(total=total if total and total > 0 else None, unit="frame", disable=None) as bar:
            while True:
                ok, frame_bgr = capture.read()
                if not ok:
                    break
                instances = keep_confident(
                    predictor.predict(frame_bgr, format="BGR"), args.confidence_threshold
                )
                drawn_rgb = visualizer.draw_instance_predictions(frame_bgr[:, :, ::-1], instances)
                drawn_bgr = np.ascontiguousarray(drawn_rgb.get_image()[:, :, ::-1])
                if output is not None:
                    writer = writer or _open_writer(output, fps, drawn_bgr.shape)
                    writer.write(drawn_bgr)
                else:
                    cv2.imshow(WINDOW_NAME, drawn_bgr)
                    if cv2.waitKey(1) == 27:  # Esc
                        break
                frames += 1
                bar.update(1)
    except KeyboardInterrupt:
        print(f"stopped after {frames} frame(s) of {source}")
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if output is None:
            cv2.destroyAllWindows()
    if frames == 0:
        print(f"error: {source}: no frame could be read", file=sys.stderr)
    return frames


def _open_writer(output: Path, fps: float, shape: tuple[int, ...]) -> cv2.VideoWriter:
    output.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[output.suffix.lower()])
    writer = cv2.VideoWriter(str(output), fourcc, fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise UsageError(f"{output}: OpenCV cannot write this video file")
    return writer


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _shown(path: Path) -> str:
    """A path relative to the working folder when it is below it (shorter messages)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())

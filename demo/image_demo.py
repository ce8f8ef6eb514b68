"""The demo on images: every --input image predicted, drawn, cut out and written as COCO
results; a file that fails is reported and the others still processed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from detectron2.structures import Instances
from plan_outputs import (
    ImageJob,
    existing_cutouts,
    existing_output,
    plan_image_outputs,
    write_bytes,
    write_image,
)
from tqdm import tqdm

from retinamask_d2.cli import UsageError
from retinamask_d2.data.image_files import list_images
from retinamask_d2.data.image_io import ImageReadError, read_image
from retinamask_d2.evaluation.coco_results import coco_results
from retinamask_d2.predictor import RetinaMaskPredictor
from retinamask_d2.visualization.cutouts import make_cutouts
from retinamask_d2.visualization.draw import draw_instances


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


def run_images(
    args: argparse.Namespace,
    make_predictor: Callable[[], RetinaMaskPredictor],
    files_read: dict[str, Path],
) -> int:
    """Predict every --input image and write its outputs; the exit code (1: some failed).

    The outputs are planned before ``make_predictor`` loads the model; ``files_read`` (the
    config, the weights) are never replaced.
    """
    report = Report()
    listing = list_images(args.input)
    for note in listing.notes:
        tqdm.write(f"note: {note}", sys.stderr)
    for problem in listing.problems:
        report.fail(problem)
    paths = listing.paths
    if not paths:
        raise UsageError("no input images: " + "; ".join(report.failures))
    jobs, json_path = plan_image_outputs(paths, args, files_read)
    if not args.overwrite:
        jobs = [job for job in jobs if _outputs_free(job, report)]
    predictor = make_predictor() if jobs else None
    results: list[dict] = []
    start = time.perf_counter()
    with tqdm(total=len(jobs), unit="image", disable=None) as progress:
        for i in range(0, len(jobs), args.batch_size):
            batch = jobs[i : i + args.batch_size]
            for job, image, instances in _predict_chunk(predictor, batch, report):
                try:
                    results += _write_image_outputs(job, image, instances, predictor, args, report)
                    report.succeeded += 1
                    report.instances += len(instances)
                except Exception as e:
                    report.fail(f"{job.path}: cannot write its outputs ({e})")
            progress.update(len(batch))
    if json_path is not None:
        write_bytes(json_path, json.dumps(results).encode(), args.overwrite)
    _print_image_summary(report, len(paths), time.perf_counter() - start, jobs, json_path, args)
    return 1 if report.failures else 0


def _outputs_free(job: ImageJob, report: Report) -> bool:
    problem = existing_output(job)
    if problem:
        report.fail(f"{job.path}: {problem}")
    return not problem


def _predict_chunk(predictor: RetinaMaskPredictor, jobs: list[ImageJob], report: Report):
    """(job, RGB image, instances) of the jobs whose image reads and predicts; others reported.

    Images outside the config's size limits are skipped with a message naming them. The chunk
    goes through the model in one pass; if that fails, image by image, so that the error is
    reported against the image that caused it.
    """
    limits = predictor.size_limits
    loaded = []
    for job in jobs:
        try:
            image = read_image(job.path, "RGB", limits.max_megapixels)
            limits.check(image.shape[1], image.shape[0], str(job.path))
            loaded.append((job, image))
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
    write_image(job.drawing, drawing, args.overwrite)
    if job.cutout_dir is not None:
        job.cutout_dir.mkdir(parents=True, exist_ok=True)
        for stale in list(existing_cutouts(job)):  # only reached with --overwrite
            stale.unlink()
        for cutout in make_cutouts(image, instances, metadata, upright=args.upright):
            write_image(job.cutout_dir / cutout.file_name(job.cutout_prefix), cutout.rgba, True)
            report.cutouts += 1
    return (
        coco_results(instances, job.image_id, job.name, metadata) if args.json is not None else []
    )


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

"""The demo on a video file or the webcam: every frame drawn, into a video file or a window."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode
from tqdm import tqdm

from retinamask_d2.cli import UsageError
from retinamask_d2.predictor import RetinaMaskPredictor

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
WINDOW_NAME = "RetinaMask"


def run_stream(
    args: argparse.Namespace,
    make_predictor: Callable[[], RetinaMaskPredictor],
    default_output: Path,
) -> int:
    """Draw the predictions on every frame of --video-input or the webcam; the exit code."""
    output = stream_output(args, default_output)
    if output is not None and output.exists() and not args.overwrite:
        print(f"error: {output} exists already; pass --overwrite", file=sys.stderr)
        return 1
    source = "webcam 0" if args.webcam else args.video_input
    capture = cv2.VideoCapture(0 if args.webcam else args.video_input)
    if not capture.isOpened():
        capture.release()
        print(f"error: {source}: cannot be opened as a video", file=sys.stderr)
        return 1
    frames = stream_frames(capture, make_predictor(), output, source)
    print(f"{frames} frame(s) of {source} done" + (f"; video: {output}" if output else ""))
    return 0 if frames else 1


def stream_output(args: argparse.Namespace, default_output: Path) -> Path | None:
    """The video file to write: --output as a .mp4/.avi name, or <stem>.mp4 in a folder; None
    for the webcam without --output (a window)."""
    if args.output is None and args.webcam:
        if not _has_display():
            raise UsageError("--webcam without --output shows a window, but there is no display")
        return None
    output = Path(args.output) if args.output else default_output
    if output.suffix.lower() in VIDEO_CODECS:
        return output
    if output.suffix and not output.is_dir():
        raise UsageError(f"--output {output}: use a .mp4 or .avi file name, or a folder")
    return output / ("webcam.mp4" if args.webcam else Path(args.video_input).stem + ".mp4")


def stream_frames(
    capture: cv2.VideoCapture, predictor: RetinaMaskPredictor, output: Path | None, source: str
) -> int:
    """Draw the predictions on every frame of ``capture``; return how many were drawn."""
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
                instances = predictor.predict(frame_bgr, format="BGR")
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

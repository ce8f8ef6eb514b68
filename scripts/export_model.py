#!/usr/bin/env python
"""Export a trained RetinaMask, post-processing and mask pasting included, to TorchScript or ONNX.

    python scripts/export_model.py --config-file output/quickstart/config.yaml \\
        --format onnx --output exported/ --opts MODEL.WEIGHTS output/quickstart/model_final.pth

Writes ``model.ts`` (TorchScript) or ``model.onnx`` into ``--output``, each with its description
``model.ts.json`` / ``model.onnx.json`` (inputs, outputs, the preprocessing inside the file and the
resize expected before it, the inference settings it holds, class names): both formats can be
exported into one folder. Existing files are replaced only with ``--overwrite``.
The exported file takes one (H, W, 3) uint8 image and returns boxes, scores, classes and masks at
that image's size (and frames, with MASK_ROI "oriented"); see docs/export.md for running it with
torch or onnxruntime only.
Modelled on detectron2's ``tools/deploy/export_model.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from retinamask_d2.cli import USAGE_EXIT_CODE, USER_ERRORS, fall_back_to_cpu  # noqa: E402
from retinamask_d2.data.image_io import read_image  # noqa: E402
from retinamask_d2.export import describe, export_onnx, export_torchscript  # noqa: E402
from retinamask_d2.modeling import RetinaMask  # noqa: E402
from retinamask_d2.predictor import RetinaMaskPredictor, load_config  # noqa: E402

FILE_NAMES = {"torchscript": "model.ts", "onnx": "model.onnx"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="e.g. the config.yaml training wrote")
    parser.add_argument("--format", choices=sorted(FILE_NAMES), default="torchscript")
    parser.add_argument(
        "--method",
        choices=["tracing"],
        default="tracing",
        help="tracing only: the model's Instances-based inference does not script",
    )
    parser.add_argument(
        "--sample-image",
        help="image to trace with, resized as the config's test size says (default: a random one)",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the files")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier export"
    )
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return parser.parse_args(argv)


def sample_image(predictor: RetinaMaskPredictor, path: str | None) -> torch.Tensor:
    """An (H, W, 3) uint8 tensor at the model's test size: ``path`` resized as the predictor
    resizes, or random pixels. Only the trace's starting point; other sizes work as well."""
    if path is not None:
        image = read_image(path, predictor.input_format)
    else:
        short = predictor.cfg.INPUT.MIN_SIZE_TEST
        long = min(round(short * 4 / 3), predictor.cfg.INPUT.MAX_SIZE_TEST or short * 2)
        image = np.random.default_rng(0).integers(0, 256, (short, long, 3), dtype=np.uint8)
    resized = predictor.aug.get_transform(image).apply_image(image)
    return torch.from_numpy(np.array(resized))  # a writable copy


def description_path(path: Path) -> Path:
    """Where the description of the exported file ``path`` goes: ``model.ts.json`` for
    ``model.ts``, so that each format's export leaves its own."""
    return path.with_name(path.name + ".json")


def check_output(folder: Path, files: list[Path], overwrite: bool) -> None:
    """Create ``folder`` if needed; raise a one-line ``ValueError`` naming the problem when it
    cannot hold the export: a file, not creatable or writable, or ``files`` already there."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output {folder} is a file; give a folder for the exported files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"--output {folder} is not a writable folder ({error.strerror})") from None
    existing = [str(f) for f in files if f.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "pass --overwrite to replace, or choose another --output"
        )


def main(argv: list[str] | None = None) -> Path:
    """Export; return the path of the exported file."""
    args = parse_args(argv)
    path = args.output / FILE_NAMES[args.format]
    check_output(args.output, [path, description_path(path)], args.overwrite)
    # The device fallback and the weights check of the shared CLI helper go here.
    cfg = load_config(args.config_file, opts=args.opts)
    fall_back_to_cpu(cfg)
    predictor = RetinaMaskPredictor(cfg)  # refuses weights that do not fit the model
    model = predictor.model
    if not isinstance(model, RetinaMask):
        raise ValueError(f"MODEL.META_ARCHITECTURE must be RetinaMask, got {type(model).__name__}")
    sample = sample_image(predictor, args.sample_image).to(model.device)
    if args.format == "torchscript":
        export_torchscript(model, sample, path)
    else:
        export_onnx(model, sample, path)
    description = describe(cfg, model, args.format, path.name)
    description_path(path).write_text(json.dumps(description, indent=2) + "\n")
    print(f"wrote {path} and {description_path(path)}")
    return path


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as error:  # bad weights, a bad sample image: one line, no traceback
        print(f"export_model.py: error: {error}", file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)
    except ValueError as error:  # a config the file cannot hold: one line, no traceback
        sys.exit(f"export_model.py: error: {error}")

"""The demo's output files, named for every input before the model loads, so that a clash stops
the run before any work.

Outputs never replace a file the run reads (an input image, the config, the weights), nor one
another, with or without ``--overwrite``: two inputs whose drawings or cut-outs would get the
same name (``a.gif`` drawn as ``a.gif.png`` next to an input ``a.gif.png``) get distinct ones
(``a.gif_2.png``); an output that would replace a file the run reads stops the run, and so does
a ``--json`` file that exists and is not JSON.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retinamask_d2.cli import UsageError
from retinamask_d2.data.image_io import IMAGE_SUFFIXES

DEFAULT_OUTPUT = Path("output") / "demo"
# Drawings keep the input's name when Pillow writes that format; other inputs get ".png" added.
WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class ImageJob:
    """One input image and the files it will produce."""

    path: Path
    name: str  # relative to the inputs' common folder, "/"-separated: the JSON file_name
    image_id: int
    drawing: Path
    cutout_dir: Path | None
    cutout_prefix: str


def plan_image_outputs(
    paths: list[Path], args: argparse.Namespace, read_files: dict[str, Path]
) -> tuple[list[ImageJob], Path | None]:
    """The jobs of ``paths`` and the --json file (None without --json).

    ``read_files`` are the other files the run reads, by what they are ("the config"), which no
    output may replace either.
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
        _check_json_path(json_path, inputs, read_files, args.overwrite)

    names = relative_names(paths)
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


def _check_json_path(
    json_path: Path, inputs: dict[str, Path], read_files: dict[str, Path], overwrite: bool
) -> None:
    if json_path.is_dir():
        raise UsageError(f"--json {json_path} is a folder; name a file")
    if _key(json_path) in inputs:
        raise UsageError(f"--json {json_path} is an input image; name another file")
    for what, path in read_files.items():
        if _key(json_path) == _key(path):
            raise UsageError(
                f"--json {json_path} is {what}, which this run reads; name another file"
            )
    if json_path.suffix.lower() in IMAGE_SUFFIXES + WRITABLE_SUFFIXES:
        raise UsageError(f"--json {json_path}: an image file name; name a .json file")
    if json_path.exists():
        if json_path.suffix.lower() != ".json":
            raise UsageError(
                f"--json {json_path} exists and is not a .json file; it is never replaced, "
                "name another file"
            )
        if not overwrite:
            raise UsageError(f"{json_path} exists already; pass --overwrite to replace it")


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


def relative_names(paths: list[Path]) -> list[str]:
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


def existing_output(job: ImageJob) -> str:
    """Why ``job`` would replace an existing output (refused without --overwrite), or ""."""
    if job.drawing.exists():
        return f"output {job.drawing} exists already; pass --overwrite"
    existing = next(existing_cutouts(job), None)
    if existing is not None:
        return f"cut-outs such as {existing} exist already; pass --overwrite"
    return ""


def existing_cutouts(job: ImageJob) -> Iterator[Path]:
    if job.cutout_dir is None or not job.cutout_dir.is_dir():
        return iter(())
    pattern = _cutout_pattern(job.cutout_prefix)
    return (p for p in sorted(job.cutout_dir.iterdir()) if pattern.fullmatch(p.name))


def _cutout_pattern(prefix: str) -> re.Pattern:
    """File names of the cut-outs of an image whose cut-outs are named after ``prefix``."""
    return re.compile(re.escape(prefix) + r"_\d{3,}_.+_\d\.\d{3}\.png")


def write_image(path: Path, array: np.ndarray, overwrite: bool) -> None:
    """Save with Pillow; without ``overwrite`` the file must not exist (checked atomically)."""
    save_format = Image.registered_extensions()[path.suffix.lower()]
    with open(path, "wb" if overwrite else "xb") as f:
        Image.fromarray(array).save(f, format=save_format)


def write_bytes(path: Path, data: bytes, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb" if overwrite else "xb") as f:
        f.write(data)

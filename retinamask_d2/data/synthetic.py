"""A synthetic COCO-format instance-segmentation dataset of coloured shapes, exact to the pixel.

Why: no COCO and no pretrained weights can be had on a small offline machine, yet a newcomer must
see real masks within minutes, and tests need data whose masks are known exactly. Each image holds
2-6 flat-coloured shapes on a textured background: disks, triangles, squares and long thin bars at
any angle (whose boxes are mostly background), some touching, some occluding others.

Masks are rasterised with pycocotools, the library that detectron2 and the COCO evaluator decode
masks with, and the image is painted from those very masks, so every annotation is exactly the
pixels of its object: an unoccluded shape keeps its polygon, an occluded one gets an RLE of its
visible part. Object colours have a channel >= 150 and are unique within an image, background
channels are <= 120, so ``(image == colour).all(-1)`` recovers each visible mask.

Everything is a function of the seed: image ``i`` of a split draws from its own generator seeded
with ``(seed, split, i)``, so the same arguments give byte-identical files.

Usage::

    python -m retinamask_d2.data.synthetic --output datasets/synthetic --train 600 --val 60
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util

CLASSES = ("disk", "triangle", "square", "bar")
SPLITS = ("train", "val")
MIN_VISIBLE_FRACTION = 0.4  # an occluded shape keeps at least this part of its pixels
MIN_VISIBLE_PIXELS = 16
TOUCH_PROBABILITY = 0.35  # chance that a new shape is placed touching an earlier one
PLACEMENT_TRIES = 30


def shape_polygon(rng: np.random.Generator, category: str, image_size: int) -> np.ndarray:
    """Vertices (N, 2) of a random ``category`` shape centred at the origin, in pixels.

    Callers round the placed vertices to 0.01 px, the precision the json keeps, before
    rasterising, so the painted pixels are exactly what the saved polygon decodes to."""
    s = image_size
    angle = rng.uniform(0, np.pi)
    if category == "disk":
        radius = rng.uniform(0.06, 0.15) * s
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        points = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif category == "triangle":
        radius = rng.uniform(0.09, 0.18) * s
        t = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
        points = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif category == "square":
        half = rng.uniform(0.06, 0.14) * s
        points = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    elif category == "bar":
        half_length = rng.uniform(0.18, 0.36) * s
        half_width = max(1.0, rng.uniform(0.010, 0.022) * s)
        points = np.array(
            [
                [-half_length, -half_width],
                [half_length, -half_width],
                [half_length, half_width],
                [-half_length, half_width],
            ]
        )
    else:
        raise ValueError(f"unknown shape category {category!r}; known: {CLASSES}")
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rotation.T


def rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of ``polygon`` as pycocotools (hence detectron2 and COCOeval) decode it."""
    rles = mask_util.frPyObjects([polygon.reshape(-1).tolist()], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _fits(polygon: np.ndarray, size: int) -> bool:
    return bool(polygon.min() >= 1 and polygon.max() <= size - 2)


def _place_touching(
    rng: np.random.Generator, shape: np.ndarray, other_centre: np.ndarray, other_mask: np.ndarray
) -> np.ndarray | None:
    """Move ``shape`` along a random direction until it just touches ``other_mask``.

    Bisects the distance from ``other_centre`` between overlapping and clear; the closest clear
    position leaves the two masks a fraction of a pixel apart, so their outlines touch.
    """
    size = other_mask.shape[0]
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    near, far = 0.0, float(size)  # at distance `size` the shape is off the image: clear
    for _ in range(12):
        middle = (near + far) / 2
        moved = rasterize(shape + other_centre + middle * direction, size, size)
        if (moved & other_mask).any():
            near = middle
        else:
            far = middle
    placed = np.round(shape + other_centre + far * direction, 2)
    return (
        placed
        if _fits(placed, size) and not (rasterize(placed, size, size) & other_mask).any()
        else None
    )


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dim, low-saturation gradient with noise; every channel stays <= 120."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(30, 80, 3) + rng.uniform(-25, 25, 3) * xx[..., None]
    base = base + rng.uniform(-25, 25, 3) * yy[..., None]
    noise = rng.normal(0, 8, (size, size, 1))
    return np.clip(base + noise, 0, 120).astype(np.uint8)


def _colour(rng: np.random.Generator, taken: set[tuple[int, int, int]]) -> tuple[int, int, int]:
    """A colour with one channel >= 150 that no other object of the image has."""
    while True:
        colour = rng.integers(0, 256, 3)
        colour[rng.integers(0, 3)] = rng.integers(150, 256)
        key = (int(colour[0]), int(colour[1]), int(colour[2]))
        if key not in taken:
            return key


def _box_xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[dict]]:
    """One (size, size, 3) BGR image and its annotations (COCO fields but ``id``/``image_id``)."""
    polygons: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    categories: list[int] = []
    num_objects = int(rng.integers(2, 7))
    for _ in range(num_objects):
        visible_masks = visible_parts(masks)  # masks only change when the tries loop breaks
        for _ in range(PLACEMENT_TRIES):
            category = int(rng.integers(0, len(CLASSES)))
            shape = shape_polygon(rng, CLASSES[category], size)
            if masks and rng.random() < TOUCH_PROBABILITY:
                other = int(rng.integers(0, len(masks)))
                placed = _place_touching(rng, shape, polygons[other].mean(0), masks[other])
                if placed is None:
                    continue
            else:
                span = np.abs(shape).max() + 2
                placed = np.round(shape + rng.uniform(span, size - span, 2), 2)
                if not _fits(placed, size):
                    continue
            mask = rasterize(placed, size, size)
            if mask.sum() < MIN_VISIBLE_PIXELS:
                continue
            # Painted last, the new shape is on top: every earlier shape must stay visible enough.
            if all(
                _visible_enough(visible & ~mask, full)
                for full, visible in zip(masks, visible_masks)
            ):
                polygons.append(placed)
                masks.append(mask)
                categories.append(category)
                break

    image = _background(rng, size)
    colours: set[tuple[int, int, int]] = set()
    annotations = []
    for polygon, full, visible, category in zip(polygons, masks, visible_parts(masks), categories):
        colour = _colour(rng, colours)
        colours.add(colour)
        image[full] = colour
        if visible.sum() == full.sum():
            segmentation: list | dict = [polygon.reshape(-1).tolist()]
        else:
            rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        annotations.append(
            {
                "category_id": category + 1,
                "segmentation": segmentation,
                "bbox": _box_xywh(visible),
                "area": int(visible.sum()),
                "iscrowd": 0,
            }
        )
    return image, annotations


def visible_parts(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The visible part of each mask once every later mask is painted over it."""
    visible = []
    covered = np.zeros_like(masks[0]) if masks else None
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered = covered | mask
    return visible[::-1]


def _visible_enough(visible: np.ndarray, full: np.ndarray) -> bool:
    area = int(visible.sum())
    return area >= MIN_VISIBLE_PIXELS and area >= MIN_VISIBLE_FRACTION * int(full.sum())


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def generate_split(output: Path, split: str, num_images: int, image_size: int, seed: int) -> Path:
    """Write ``output/<split>/NNNNN.png`` and ``output/<split>.json``; returns the json path."""
    images = (render_image(_image_rng(seed, split, i), image_size) for i in range(num_images))
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)]
    params = {"seed": seed, "image_size": image_size}
    return write_split(output, split, images, "retinamask_d2 synthetic shapes", params, categories)


def write_split(
    output: Path,
    split: str,
    images: Iterable[tuple[np.ndarray, list[dict]]],
    description: str,
    params: dict,
    categories: list[dict],
) -> Path:
    """Write each (BGR image, annotations) of ``images`` to ``output/<split>/NNNNN.png`` and
    ``output/<split>.json``, whose "info" records ``params`` for :func:`is_written`; returns the
    json path. Every synthetic set (this one, the thin-objects benchmark's) is written here."""
    image_dir = output / split
    image_dir.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    for index, (image, anns) in enumerate(images):
        file_name = f"{index:05d}.png"
        if not cv2.imwrite(str(image_dir / file_name), image):
            raise OSError(f"could not write {image_dir / file_name}")
        height, width = image.shape[:2]
        entries.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, **ann})
    info = {"description": description, "split": split, **params, "num_images": len(entries)}
    dataset = {
        "info": info,
        "images": entries,
        "annotations": annotations,
        "categories": categories,
    }
    json_path = output / f"{split}.json"
    json_path.write_text(json.dumps(dataset))
    return json_path


def generate(
    output: Path, counts: dict[str, int], image_size: int = 128, seed: int = 0
) -> dict[str, Path]:
    """Write every split of ``counts`` (split name -> number of images) under ``output``."""
    return {
        split: generate_split(output, split, n, image_size, seed) for split, n in counts.items()
    }


def is_generated(output: Path, counts: dict[str, int], image_size: int, seed: int) -> bool:
    """Whether ``output`` already holds exactly the splits these arguments would write."""
    return is_written(output, counts, {"seed": seed, "image_size": image_size})


def is_written(output: Path, counts: dict[str, int], params: dict) -> bool:
    """Whether ``output`` holds the splits of ``counts`` (split -> number of images), each written
    by :func:`write_split` with ``params``."""
    for split, num_images in counts.items():
        try:
            info = json.loads((output / f"{split}.json").read_text()).get("info", {})
        except (OSError, ValueError):
            return False
        if any(
            info.get(key) != value for key, value in {**params, "num_images": num_images}.items()
        ):
            return False
        if not all((output / split / f"{i:05d}.png").is_file() for i in range(num_images)):
            return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m retinamask_d2.data.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", default="datasets/synthetic", help="folder to write into")
    parser.add_argument("--train", type=int, default=600, help="number of training images")
    parser.add_argument("--val", type=int, default=60, help="number of validation images")
    parser.add_argument("--image-size", type=int, default=128, help="side of the square images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.image_size < 32:
        parser.error(f"--image-size {args.image_size}: must be at least 32 pixels")
    counts = {"train": args.train, "val": args.val}
    for split, path in generate(Path(args.output), counts, args.image_size, args.seed).items():
        print(f"{split}: {counts[split]} images, annotations in {path}")


if __name__ == "__main__":
    main()

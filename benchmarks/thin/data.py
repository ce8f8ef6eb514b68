"""The thin-objects benchmark set: long, thin, tilted, crossing and curved objects, COCO format.

Why a second generator: the quickstart's shapes (``retinamask_d2.data.synthetic``) are the data
the project's defaults were made on, so they cannot tell whether a default generalises. This set
is made to stress where a box detector with a mask branch is weakest: objects whose box is mostly
background. Each image (256-384 px per side) holds 4-12 objects of six classes:

- ``hairline`` (2-4 px wide), ``rod`` (5-9 px), ``plank`` (10-15 px): straight bars of
  30-85% of the image side, at any angle; a quarter of them exactly horizontal, a quarter exactly
  vertical;
- ``arc``: a curved thin stroke (3-8 px wide) along a circular arc or an S-curve;
- ``ring``: an annulus (an object with a hole), sometimes a square frame;
- ``blob``: a compact, irregular filled object (the "easy" class, for contrast).

Thin objects are often placed crossing an earlier thin object (through its middle, at another
angle) or touching one (side by side, a few px apart). Objects and backgrounds are textured
(stripes, noise), and half of the backgrounds are cluttered with thin dark strokes that are not
objects. Later objects occlude earlier ones; every annotation is the RLE of the object's visible
pixels, exactly the pixels painted with it (occluded objects keep at least 40% of their pixels).

Everything is a function of the seed: image ``i`` of a split draws from a generator seeded with
``(seed, split, i)``, so the same arguments give byte-identical files.

    python -m benchmarks.thin.data --output datasets/thin_shapes --train 400 --val 60
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util

from retinamask_d2.data.synthetic import is_written, visible_parts, write_split

CLASSES = ("hairline", "rod", "plank", "arc", "ring", "blob")
THIN = ("hairline", "rod", "plank", "arc")
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_PIXELS = 20
CROSS_PROBABILITY = 0.35  # a new thin object crosses an earlier thin one
TOUCH_PROBABILITY = 0.15  # ... or lies side by side with it
PLACEMENT_TRIES = 25
SHIFT = 4  # cv2 sub-pixel bits for polygon vertices
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Layout:
    """Image sides and bar widths (px, inclusive ranges) and objects per image. The default is
    the set the thin-objects benchmark was made with; ``READABLE`` is drawn at the size the
    models see, every stroke at least 3 px wide (``benchmarks.thin.oriented``)."""

    sides: tuple[int, int] = (256, 384)
    bar_widths: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {"hairline": (2, 4), "rod": (5, 9), "plank": (10, 15)}
    )
    objects: tuple[int, int] = (4, 12)

    def params(self) -> dict:
        """What :func:`is_generated` compares, as JSON stores it: None for the default (files
        written before layouts existed have no such key), every field otherwise."""
        return {"layout": None if self == Layout() else json.loads(json.dumps(asdict(self)))}


READABLE = Layout(
    sides=(192, 224),
    bar_widths={"hairline": (3, 4), "rod": (5, 8), "plank": (9, 12)},
    objects=(3, 8),
)


def _bar_mask(
    shape: tuple[int, int], centre: np.ndarray, length: float, width: int, angle: float
) -> np.ndarray:
    """A filled rectangle ``length`` x ``width`` px centred at ``centre``, rotated by ``angle``.

    Horizontal and vertical bars (angle a multiple of pi/2) are rasterised as exact pixel
    rectangles, so a ``width``-px bar is exactly ``width`` rows or columns."""
    mask = np.zeros(shape, np.uint8)
    cos, sin = round(np.cos(angle), 12), round(np.sin(angle), 12)
    if abs(sin) < 1e-9 or abs(cos) < 1e-9:
        horizontal = abs(sin) < 1e-9
        half_l, lo = int(round(length / 2)), int(np.floor(-width / 2 + 0.5))
        cx, cy = int(round(centre[0])), int(round(centre[1]))
        if horizontal:
            mask[max(cy + lo, 0) : cy + lo + width, max(cx - half_l, 0) : cx + half_l] = 1
        else:
            mask[max(cy - half_l, 0) : cy + half_l, max(cx + lo, 0) : cx + lo + width] = 1
        return mask.astype(bool)
    u, v = np.array([cos, sin]), np.array([-sin, cos])
    corners = [centre + a * u * length / 2 + b * v * width / 2 for a, b in _CORNERS]
    cv2.fillPoly(mask, [np.round(np.array(corners) * (1 << SHIFT)).astype(np.int32)], 1, 8, SHIFT)
    return mask.astype(bool)


_CORNERS = ((-1, -1), (1, -1), (1, 1), (-1, 1))


def _arc_mask(rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray) -> np.ndarray:
    """A curved stroke 3-8 px wide: a circular arc or an S-curve through ``centre``."""
    side = min(shape)
    width = int(rng.integers(3, 9))
    length = rng.uniform(0.4, 0.9) * side
    angle = rng.uniform(0, np.pi)
    t = np.linspace(-0.5, 0.5, 64)
    if rng.random() < 0.5:
        bend = rng.uniform(0.8, 2.5)  # radians of arc
        radius = length / bend
        points = np.stack([radius * np.sin(t * bend), radius * (1 - np.cos(t * bend))], 1)
        points -= points.mean(0)
    else:
        amplitude = rng.uniform(0.05, 0.15) * length
        points = np.stack([t * length, amplitude * np.sin(2 * np.pi * t)], 1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = points @ rotation.T + centre
    mask = np.zeros(shape, np.uint8)
    poly = np.round(points * (1 << SHIFT)).astype(np.int32)
    cv2.polylines(mask, [poly], False, 1, width, cv2.LINE_8, SHIFT)
    return mask.astype(bool)


def _ring_mask(rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray) -> np.ndarray:
    """An annulus or a square frame: an object with a hole."""
    side = min(shape)
    outer = rng.uniform(0.07, 0.16) * side
    inner = outer * rng.uniform(0.45, 0.8)
    mask = np.zeros(shape, np.uint8)
    c = np.round(centre * (1 << SHIFT)).astype(np.int32)
    if rng.random() < 0.7:
        cv2.circle(mask, tuple(int(x) for x in c), int(outer * (1 << SHIFT)), 1, -1, 8, SHIFT)
        cv2.circle(mask, tuple(int(x) for x in c), int(inner * (1 << SHIFT)), 0, -1, 8, SHIFT)
    else:
        angle = rng.uniform(0, np.pi / 2)
        for half, value in ((outer, 1), (inner, 0)):
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = np.array(_CORNERS, float) * half @ rotation.T + centre
            poly = np.round(corners * (1 << SHIFT)).astype(np.int32)
            cv2.fillPoly(mask, [poly], value, 8, SHIFT)
    return mask.astype(bool)


def _blob_mask(rng: np.random.Generator, shape: tuple[int, int], centre: np.ndarray) -> np.ndarray:
    """A compact irregular star-shaped polygon."""
    side = min(shape)
    radius = rng.uniform(0.05, 0.12) * side
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    r = radius * (1 + 0.25 * np.sin(int(rng.integers(2, 6)) * t + rng.uniform(0, 6)))
    r *= rng.uniform(0.85, 1.15, len(t))
    points = np.stack([np.cos(t) * r, np.sin(t) * r], 1) + centre
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * (1 << SHIFT)).astype(np.int32)], 1, 8, SHIFT)
    return mask.astype(bool)


def _bar_angle(rng: np.random.Generator) -> float:
    """Exactly horizontal or vertical half of the time, any angle otherwise."""
    draw = rng.random()
    if draw < 0.25:
        return 0.0
    if draw < 0.5:
        return np.pi / 2
    return float(rng.uniform(0, np.pi))


def _object_mask(
    rng: np.random.Generator,
    category: str,
    shape: tuple[int, int],
    anchor: dict | None,
    bar_widths: dict[str, tuple[int, int]],
) -> tuple[np.ndarray, dict]:
    """The full mask of a new object and its geometry (for later crossing/touching objects).

    ``anchor`` is an earlier straight thin object to cross or touch, or None."""
    height, width = shape
    side = min(shape)
    if anchor is None:
        centre = rng.uniform([0.15 * width, 0.15 * height], [0.85 * width, 0.85 * height])
    if category in bar_widths:
        bar_width = int(rng.integers(bar_widths[category][0], bar_widths[category][1] + 1))
        length = rng.uniform(0.3, 0.85) * side
        angle = _bar_angle(rng)
        if anchor is None:
            # A centre from which the whole bar fits in the image.
            half = np.abs([np.cos(angle), np.sin(angle)]) * length / 2 + bar_width / 2 + 2
            centre = rng.uniform(half, np.maximum([width, height] - half, half + 1))
        else:
            direction = np.array([np.cos(anchor["angle"]), np.sin(anchor["angle"])])
            if anchor["mode"] == "cross":
                # Through a point near the middle of the earlier bar, at a clearly other angle.
                centre = anchor["centre"] + direction * rng.uniform(-0.2, 0.2) * anchor["length"]
                angle = anchor["angle"] + rng.choice([-1, 1]) * rng.uniform(0.25, np.pi / 2)
                if rng.random() < 0.3:
                    angle = anchor["angle"] + np.pi / 2  # a right-angle cross
            else:
                normal = np.array([-direction[1], direction[0]])
                gap = (anchor["width"] + bar_width) / 2 + rng.uniform(0.5, 3.0)
                centre = anchor["centre"] + normal * gap * rng.choice([-1, 1])
                angle = anchor["angle"]
        angle = float(np.mod(angle, np.pi))
        mask = _bar_mask(shape, centre, length, bar_width, angle)
        return mask, {"centre": centre, "angle": angle, "length": length, "width": bar_width}
    if anchor is not None:
        centre = anchor["centre"]
    if category == "arc":
        return _arc_mask(rng, shape, centre), {}
    if category == "ring":
        return _ring_mask(rng, shape, centre), {}
    if category == "blob":
        return _blob_mask(rng, shape, centre), {}
    raise ValueError(f"unknown category {category!r}; known: {CLASSES}")


def _background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Textured background (low-frequency noise, grain, sometimes stripes); half cluttered with
    thin dark strokes that are not objects. Channels stay <= 140."""
    height, width = shape
    coarse = rng.uniform(20, 110, (max(height // 32, 2), max(width // 32, 2), 3))
    image = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 10, (height, width, 1)).astype(np.float32)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        image += (
            15 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)[..., None]
        )
    image = np.clip(image, 0, 140).astype(np.uint8)
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(5, 20))):
            p0 = rng.uniform(0, [width, height])
            p1 = p0 + rng.normal(0, 0.25 * min(shape), 2)
            colour = tuple(int(c) for c in rng.integers(0, 90, 3))
            thickness = int(rng.integers(1, 4))
            cv2.line(image, tuple(np.int32(p0)), tuple(np.int32(p1)), colour, thickness)
    return image


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Paint ``mask`` with a bright base colour and a texture (grain, sometimes stripes)."""
    base = rng.integers(60, 256, 3).astype(np.float32)
    base[rng.integers(0, 3)] = rng.uniform(170, 256)
    ys, xs = np.nonzero(mask)
    values = np.repeat(base[None], len(ys), 0) + rng.normal(0, 12, (len(ys), 1))
    if rng.random() < 0.5:
        theta, period = rng.uniform(0, np.pi), rng.uniform(3, 10)
        stripes = np.sin((xs * np.cos(theta) + ys * np.sin(theta)) * 2 * np.pi / period)
        values += 25 * stripes[:, None]
    image[ys, xs] = np.clip(values, 0, 255).astype(np.uint8)


def render_image(
    rng: np.random.Generator, layout: Layout = Layout()
) -> tuple[np.ndarray, list[dict]]:
    """One BGR image (sides in ``layout.sides``) and its annotations (COCO fields, RLE masks)."""
    low, high = layout.sides
    shape = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
    masks: list[np.ndarray] = []
    categories: list[int] = []
    bars: list[dict] = []  # geometry of the straight thin objects, for crossing/touching
    for _ in range(int(rng.integers(layout.objects[0], layout.objects[1] + 1))):
        for _ in range(PLACEMENT_TRIES):
            category = int(rng.integers(0, len(CLASSES)))
            anchor = None
            draw = rng.random()
            if CLASSES[category] in THIN and bars and draw < CROSS_PROBABILITY + TOUCH_PROBABILITY:
                mode = "cross" if draw < CROSS_PROBABILITY else "touch"
                anchor = {**bars[int(rng.integers(0, len(bars)))], "mode": mode}
                if mode == "touch" and CLASSES[category] not in layout.bar_widths:
                    continue
            mask, geometry = _object_mask(rng, CLASSES[category], shape, anchor, layout.bar_widths)
            if mask.sum() < MIN_VISIBLE_PIXELS or _touches_border(mask):
                continue
            if anchor is not None and anchor["mode"] == "touch" and (mask & _dilated(masks)).any():
                continue
            visible_before = visible_parts(masks)
            if all(_visible_enough(v & ~mask, m) for m, v in zip(masks, visible_before)):
                masks.append(mask)
                categories.append(category)
                if geometry:
                    bars.append(geometry)
                break

    image = _background(rng, shape)
    annotations = []
    for full, visible, category in zip(masks, visible_parts(masks), categories):
        _paint(rng, image, full)
        rle = mask_util.encode(np.asfortranarray(visible.astype(np.uint8)))
        x, y, w, h = mask_util.toBbox(rle).tolist()
        annotations.append(
            {
                "category_id": category + 1,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "bbox": [x, y, w, h],
                "area": int(visible.sum()),
                "iscrowd": 0,
            }
        )
    return image, annotations


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _dilated(masks: list[np.ndarray]) -> np.ndarray:
    """Union of the masks grown by 1 px: a touching object keeps at least a hairline gap."""
    union = np.zeros_like(masks[0]) if masks else np.zeros((1, 1), bool)
    for m in masks:
        union |= m
    return cv2.dilate(union.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _visible_enough(visible: np.ndarray, full: np.ndarray) -> bool:
    area = int(visible.sum())
    return area >= MIN_VISIBLE_PIXELS and area >= MIN_VISIBLE_FRACTION * int(full.sum())


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index, GENERATOR_VERSION])


def generate(
    output: Path, counts: dict[str, int], seed: int = 0, layout: Layout = Layout()
) -> dict[str, Path]:
    """Write every split of ``counts`` (split name -> number of images) under ``output``."""
    categories = [
        {"id": i + 1, "name": name, "supercategory": "thin" if name in THIN else "compact"}
        for i, name in enumerate(CLASSES)
    ]
    params = {"seed": seed, "version": GENERATOR_VERSION, **layout.params()}
    return {
        split: write_split(
            output,
            split,
            (render_image(_image_rng(seed, split, i), layout) for i in range(n)),
            "retinamask_d2 thin-objects benchmark set",
            params,
            categories,
        )
        for split, n in counts.items()
    }


def is_generated(
    output: Path, counts: dict[str, int], seed: int, layout: Layout = Layout()
) -> bool:
    """Whether ``output`` already holds exactly the splits these arguments would write."""
    params = {"seed": seed, "version": GENERATOR_VERSION, **layout.params()}
    return is_written(output, counts, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("datasets/thin_shapes"))
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = {"train": args.train, "val": args.val}
    for split, path in generate(args.output, counts, args.seed).items():
        print(f"{split}: {counts[split]} images, annotations in {path}")


if __name__ == "__main__":
    main()

"""Scenes of objects with identities, for measuring how well crops and embedders re-find an object.

Each identity is one object with its own look — a thin tool (a two-tone striped strip) or a
compact object (a textured disk or square) — seen in several images at other angles, scales,
places and backgrounds. The backgrounds are clutter painted from the same palette as the
objects, drawn independently of the identity: whatever describes a box crop's background
describes nothing that identifies the object.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util

# Colours of objects and clutter alike (RGB).
PALETTE = np.array(
    [
        (200, 40, 40),
        (40, 160, 60),
        (50, 80, 200),
        (220, 190, 40),
        (150, 60, 170),
        (40, 180, 190),
        (230, 130, 40),
        (120, 120, 120),
        (240, 240, 240),
        (30, 30, 30),
    ],
    dtype=np.uint8,
)
IMAGE_SIZE = 192


@dataclass
class Identity:
    """How one object looks in its own frame (long side horizontal)."""

    kind: str  # "thin" or "compact"
    length: int  # px, at scale 1
    width: int
    body: int  # palette index of the main colour
    accent: int  # palette index of the stripes / the handle
    period: int  # px between stripes
    handle: float  # fraction of the length painted in the accent colour (thin tools)
    round: bool  # compact: a disk, else a square
    seed: int  # of its texture noise


@dataclass
class View:
    """One image of one identity: the image, the object's mask and box, and how it was shown."""

    identity: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) bool
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    tilt: float  # degrees from the nearest image axis, in [0, 45]
    elongation: float  # long over short side


def make_identities(count_thin: int, count_compact: int, seed: int) -> list[Identity]:
    rng = np.random.default_rng(seed)
    identities = []
    for kind, count in (("thin", count_thin), ("compact", count_compact)):
        for _ in range(count):
            body, accent = rng.choice(len(PALETTE), size=2, replace=False)
            if kind == "thin":
                length, width = int(rng.integers(70, 120)), int(rng.integers(6, 13))
            else:
                length = width = int(rng.integers(30, 50))
            identities.append(
                Identity(
                    kind,
                    length,
                    width,
                    int(body),
                    int(accent),
                    int(rng.integers(6, 16)),
                    float(rng.uniform(0.15, 0.4)) if kind == "thin" else 0.0,
                    bool(rng.integers(0, 2)),
                    int(rng.integers(0, 2**31)),
                )
            )
    return identities


def _object_patch(identity: Identity, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The object in its own frame at ``scale``: RGB patch and mask."""
    length = max(8, round(identity.length * scale))
    width = max(3, round(identity.width * scale))
    texture = np.random.default_rng(identity.seed).normal(0, 12, (width, length, 1))
    rgb = np.broadcast_to(PALETTE[identity.body].astype(float), (width, length, 3)).copy()
    accent = PALETTE[identity.accent].astype(float)
    period = max(2, round(identity.period * scale))
    if identity.kind == "thin":
        rgb[:, ::period] = accent
        rgb[:, : max(1, round(identity.handle * length))] = accent  # a handle at one end
        mask = np.ones((width, length), bool)
    else:
        rgb[::period] = accent  # stripes across a compact object
        mask = np.ones((width, length), bool)
        if identity.round:
            yy, xx = np.mgrid[:width, :length]
            mask = (yy - (width - 1) / 2) ** 2 + (xx - (length - 1) / 2) ** 2 <= (length / 2) ** 2
    rgb = np.clip(rgb + texture, 0, 255).astype(np.uint8)
    return rgb, mask


def _clutter(rng: np.random.Generator) -> np.ndarray:
    """A background of noise and palette-coloured rectangles and lines."""
    image = rng.integers(60, 200, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
    for _ in range(int(rng.integers(8, 16))):
        colour = tuple(int(c) for c in PALETTE[rng.integers(len(PALETTE))])
        x, y = rng.integers(0, IMAGE_SIZE, 2)
        if rng.random() < 0.5:
            w, h = rng.integers(8, 50, 2)
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
        else:
            x2, y2 = rng.integers(0, IMAGE_SIZE, 2)
            cv2.line(image, (int(x), int(y)), (int(x2), int(y2)), colour, int(rng.integers(2, 8)))
    return image


def render_view(identity_id: int, identity: Identity, rng: np.random.Generator) -> View:
    """``identity`` at a random angle, scale and place on fresh clutter."""
    rgb, mask = _object_patch(identity, float(rng.uniform(0.8, 1.2)))
    angle = float(rng.uniform(0, 180))
    height, width = mask.shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]]) @ turn.T
    span = corners.max(0) - corners.min(0)
    margin = IMAGE_SIZE - span
    offset = np.array([rng.uniform(2, max(3, m - 2)) for m in margin]) - corners.min(0)
    turn[:, 2] += offset
    size = (IMAGE_SIZE, IMAGE_SIZE)
    placed = cv2.warpAffine(rgb, turn, size, flags=cv2.INTER_LINEAR)
    placed_mask = cv2.warpAffine(mask.astype(np.uint8), turn, size, flags=cv2.INTER_NEAREST) > 0
    image = _clutter(rng)
    image[placed_mask] = placed[placed_mask]
    rows, cols = np.flatnonzero(placed_mask.any(1)), np.flatnonzero(placed_mask.any(0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    tilt = angle % 90
    return View(
        identity_id,
        image,
        placed_mask,
        box,
        min(tilt, 90 - tilt),
        max(height, width) / min(height, width),
    )


def make_views(identities: list[Identity], views_per_identity: int, seed: int) -> list[View]:
    rng = np.random.default_rng(seed)
    return [
        render_view(i, identity, rng)
        for i, identity in enumerate(identities)
        for _ in range(views_per_identity)
    ]


def write_coco(views: list[View], identities: list[Identity], folder: Path) -> Path:
    """The views as a COCO-format dataset in ``folder`` (PNG images and ``annotations.json``,
    categories "tool" and "compact", RLE masks), for training a model on such scenes."""
    folder.mkdir(parents=True, exist_ok=True)
    categories = {"thin": 1, "compact": 2}
    images, annotations = [], []
    for i, view in enumerate(views):
        name = f"{i:05d}.png"
        cv2.imwrite(str(folder / name), cv2.cvtColor(view.image, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        rle = mask_util.encode(np.asfortranarray(view.mask.astype(np.uint8)))
        x0, y0, x1, y1 = view.box
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": categories[identities[view.identity].kind],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(view.mask.sum()),
                "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
            }
        )
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "tool"}, {"id": 2, "name": "compact"}],
    }
    path = folder / "annotations.json"
    path.write_text(json.dumps(dataset))
    return path


def main() -> None:
    """Write a training set of scenes whose identities are not the benchmark's."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--output", type=Path, default=Path("datasets/identity_scenes"))
    parser.add_argument("--thin", type=int, default=120)
    parser.add_argument("--compact", type=int, default=60)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1000, help="not the benchmark's (0)")
    args = parser.parse_args()
    identities = make_identities(args.thin, args.compact, args.seed)
    views = make_views(identities, args.views, args.seed + 1)
    print(write_coco(views, identities, args.output / "train"))


if __name__ == "__main__":
    main()

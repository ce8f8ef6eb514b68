"""Pictures of search results and groups: each object as its cut-out over the thumbnail of its
source image, the object outlined there."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util

from .crops import NEUTRAL_GREY

TILE = 160  # side of a tile's cut-out square and width of its thumbnail
THUMB_HEIGHT = 120
LABEL_HEIGHT = 18
OUTLINE_BGR = (0, 0, 255)


def object_tile(folder: Path, obj: dict, label: str) -> np.ndarray:
    """(TILE + THUMB_HEIGHT + LABEL_HEIGHT, TILE, 3) BGR: the object's cut-out, its source
    image with the object outlined in red, and ``label``."""
    tile = np.full((TILE + THUMB_HEIGHT + LABEL_HEIGHT, TILE, 3), 255, dtype=np.uint8)
    tile[:TILE] = NEUTRAL_GREY
    cutout = cv2.imread(str(folder / obj["cutout"]), cv2.IMREAD_UNCHANGED)
    if cutout is not None and cutout.ndim == 3 and cutout.shape[2] == 4:
        alpha = cutout[..., 3:] / 255.0
        bgr = (cutout[..., :3] * alpha + NEUTRAL_GREY * (1 - alpha)).astype(np.uint8)
        _paste_fitted(tile[:TILE], bgr)
    image = cv2.imread(obj["image"], cv2.IMREAD_COLOR)
    if image is not None:
        mask = mask_util.decode({**obj["mask"], "counts": obj["mask"]["counts"].encode()})
        if mask.shape == image.shape[:2]:
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            thickness = max(1, round(max(image.shape[:2]) / 150))
            cv2.drawContours(image, contours, -1, OUTLINE_BGR, thickness)
        _paste_fitted(tile[TILE : TILE + THUMB_HEIGHT], image)
    cv2.putText(
        tile,
        label,
        (3, tile.shape[0] - 5),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
        cv2.LINE_AA,
    )
    return tile


def _paste_fitted(area: np.ndarray, picture: np.ndarray) -> None:
    """``picture`` scaled to fit ``area`` (aspect kept), centred in it."""
    height, width = area.shape[:2]
    scale = min(height / picture.shape[0], width / picture.shape[1])
    new_h, new_w = max(1, int(picture.shape[0] * scale)), max(1, int(picture.shape[1] * scale))
    resized = cv2.resize(picture, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    area[top : top + new_h, left : left + new_w] = resized


def gallery(folder: Path, rows: list[list[tuple[dict, str]]]) -> np.ndarray:
    """Tiles of (object, label) laid out row by row (rows padded to the longest), BGR."""
    width = max(len(r) for r in rows)
    lines = []
    for row in rows:
        tiles = [object_tile(folder, obj, label) for obj, label in row]
        tiles += [np.full_like(tiles[0], 255)] * (width - len(tiles))
        lines.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in tiles], axis=1))
    return np.concatenate(lines, axis=0)

"""Small COCO-format datasets written by the tests: annotations, RLE masks, a json with its images,
and a config that loads them."""

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.config import get_cfg

from retinamask_d2 import add_retinamask_config

H, W = 32, 40
SQUARE = [4.0, 4.0, 14.0, 4.0, 14.0, 14.0, 4.0, 14.0]  # polygon of x, y in [4, 14]


def ann(ann_id, image_id=1, category_id=1, bbox=(4, 4, 10, 10), segmentation=None):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": list(bbox),
        "area": 100.0,
        "iscrowd": 0,
        "segmentation": [SQUARE] if segmentation is None else segmentation,
    }


def rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def write_coco_json(
    tmp_path: Path, annotations: list[dict], images=None, categories=None
) -> tuple[str, str]:
    """A json with two 32x40 images (both on disk) and categories 1 "cat", 5 "dog"."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    if images is None:
        images = [{"id": i, "file_name": f"{i}.png", "width": W, "height": H} for i in (1, 2)]
    for img in images:
        cv2.imwrite(str(image_dir / img["file_name"]), np.full((H, W, 3), 60 * img["id"], np.uint8))
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}],
    }
    json_file = tmp_path / "train.json"
    json_file.write_text(json.dumps(data))
    return str(json_file), str(image_dir)


def coco_cfg(mask_format="polygon"):
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "RetinaMask"
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = mask_format
    cfg.INPUT.MIN_SIZE_TRAIN = (H,)
    cfg.INPUT.RANDOM_FLIP = "none"
    return cfg


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width x height, with almost no pixel data (a few hundred bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 7))
        + chunk(b"IEND", b"")
    )

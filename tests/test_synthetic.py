"""The synthetic dataset: deterministic, exact masks, and the hard cases it promises."""

import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from retinamask_d2.data.coco_json import check_coco_json
from retinamask_d2.data.synthetic import CLASSES, generate, is_generated, main

SIZE = 96
CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))  # grows a mask by its 4-neighbours


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, {"train": 40, "val": 4}, image_size=SIZE, seed=3)
    return root


def _decode(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    return mask_util.decode(rle).astype(bool)


def _annotations_by_image(data: dict) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return by_image


def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path):
    generate(tmp_path / "again", {"train": 40, "val": 4}, image_size=SIZE, seed=3)
    generate(tmp_path / "other", {"train": 3}, image_size=SIZE, seed=4)
    for name in ["train.json", "val.json", "train/00000.png", "train/00039.png", "val/00003.png"]:
        assert (dataset / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for name in ["train/00000.png", "train/00002.png"]:
        assert (dataset / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name
    # Image i depends on (seed, split, i) only: a shorter run gives the same first images.
    generate(tmp_path / "fewer", {"train": 2}, image_size=SIZE, seed=3)
    assert (tmp_path / "fewer/train/00001.png").read_bytes() == (
        dataset / "train/00001.png"
    ).read_bytes()


def test_every_mask_is_exactly_the_pixels_of_its_object(dataset):
    data = json.loads((dataset / "train.json").read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASSES)
    for image_info in data["images"]:
        image = cv2.imread(str(dataset / "train" / image_info["file_name"]))
        assert image.shape == (SIZE, SIZE, 3)
        background = image.max(axis=2) <= 120
        covered = np.zeros((SIZE, SIZE), bool)
        for ann in _annotations_by_image(data)[image_info["id"]]:
            mask = _decode(ann["segmentation"], SIZE, SIZE)
            colour = image[mask][0]
            assert np.array_equal(mask, (image == colour).all(axis=2)), ann["id"]
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
            assert not (covered & mask).any()  # visible parts never overlap
            covered |= mask
        assert np.array_equal(covered, ~background)  # every object pixel is annotated


def test_holds_thin_bars_occlusions_and_touching_objects(dataset):
    data = json.loads((dataset / "train.json").read_text())
    bar_id = CLASSES.index("bar") + 1
    assert {a["category_id"] for a in data["annotations"]} == set(range(1, len(CLASSES) + 1))
    fill = [a["area"] / (a["bbox"][2] * a["bbox"][3]) for a in data["annotations"]]
    bar_fill = [f for f, a in zip(fill, data["annotations"]) if a["category_id"] == bar_id]
    assert sum(f < 0.3 for f in bar_fill) >= 5  # long thin diagonal bars: box mostly background
    occluded = [a for a in data["annotations"] if isinstance(a["segmentation"], dict)]
    assert len(occluded) >= 10
    assert all(a["area"] >= 16 for a in data["annotations"])
    touching = 0  # pairs of whole (polygon, so unoccluded) shapes whose outlines touch
    for anns in _annotations_by_image(data).values():
        whole = [a for a in anns if isinstance(a["segmentation"], list)]
        masks = [_decode(a["segmentation"], SIZE, SIZE) for a in whole]
        for i, a in enumerate(masks):
            grown = cv2.dilate(a.astype(np.uint8), CROSS).astype(bool)
            touching += sum(bool((grown & b).any()) for b in masks[i + 1 :])
    assert touching >= 5


def test_cli_writes_splits_that_pass_the_dataset_checks(tmp_path, capsys):
    main(["--output", str(tmp_path), "--train", "3", "--val", "2", "--image-size", "64"])
    assert "train: 3 images" in capsys.readouterr().out
    assert is_generated(tmp_path, {"train": 3, "val": 2}, 64, 0)
    assert not is_generated(tmp_path, {"train": 3, "val": 2}, 64, 1)
    assert not is_generated(tmp_path, {"train": 4}, 64, 0)
    for split in ("train", "val"):
        report = check_coco_json(str(tmp_path / f"{split}.json"), str(tmp_path / split))
        assert report.skipped == {} and report.clipped == [] and report.has_masks
    (tmp_path / "train" / "00002.png").unlink()
    assert not is_generated(tmp_path, {"train": 3}, 64, 0)

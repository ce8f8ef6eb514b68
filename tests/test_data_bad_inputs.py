"""Bad COCO jsons and image files are refused before training, naming the file, the annotation
and the image; headers are checked for every image at once; what fails only when decoded is
skipped in training up to a limit; 16-bit images train as the demo reads them."""

import json
import logging
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from retinamask_d2.data.coco_json import CocoJsonError, check_coco_json
from retinamask_d2.data.image_io import ImageReadError, read_image
from retinamask_d2.data.mapper import ImageIOMapper
from retinamask_d2.data.train_loader import SeededMapDataset, UnreadableImagesError
from retinamask_d2.data.user_datasets import setup_datasets
from tests.coco_files import SQUARE, H, W, ann, coco_cfg, rle, write_coco_json


def _refusal(tmp_path, annotations, **kwargs) -> str:
    json_file, image_root = write_coco_json(tmp_path, annotations, **kwargs)
    with pytest.raises(CocoJsonError) as error:
        check_coco_json(json_file, image_root)
    message = str(error.value)
    assert message.startswith(json_file)
    return message


@pytest.mark.parametrize(
    "segmentation, problem",
    [
        ([[4.0, 4.0, float("nan"), 14.0, 4.0, 14.0]], "must be finite numbers, got nan"),
        ([[4.0, 4.0, float("inf"), 14.0, 4.0, 14.0]], "must be finite numbers, got inf"),
        ([[4.0, "4", 14.0, 4.0, 14.0, 14.0]], "must be finite numbers, got '4'"),
        ([[4.0, 4.0, True, 4.0, 14.0, 14.0]], "must be finite numbers, got True"),
        ([SQUARE + [4.0]], "odd number of coordinates (9)"),
        ([[4.0, 4.0, 1e7, 4.0, 14.0, 14.0]], "beyond 10x the image's 40x32"),
        ([[4.0, 4.0, 14.0, -400.0, 14.0, 14.0]], "beyond 10x the image's 40x32"),
    ],
)
def test_polygon_coordinates_must_be_finite_even_and_near_the_image(
    tmp_path, segmentation, problem
):
    message = _refusal(tmp_path, [ann(1), ann(9, segmentation=segmentation)])
    assert "annotation id 9 (image id 1, '1.png')" in message
    assert problem in message


@pytest.mark.parametrize(
    "rle, problem",
    [
        ({"size": [H, W], "counts": [10, 20]}, "cover 30 pixels, the image has 32 x 40 = 1280"),
        ({"size": [H, W], "counts": [1280, -5, 5]}, "list of non-negative integers"),
        ({"size": [H, W], "counts": [640.5, 639.5]}, "list of non-negative integers"),
        ({"size": [H, W], "counts": "\x7f\x7f"}, "invalid character"),
        ({"size": [H, W], "counts": "h"}, "ends inside a number"),  # 'h' sets the more-bit
        ({"size": [H, W], "counts": "0000"}, "cover 0 pixels"),
        ({"size": [H, W], "counts": None}, "list of non-negative integers"),
    ],
)
def test_rle_counts_must_cover_the_image_exactly(tmp_path, rle, problem):
    message = _refusal(tmp_path, [ann(1), ann(9, segmentation=rle)])
    assert "annotation id 9 (image id 1, '1.png')" in message
    assert problem in message


def test_well_formed_rle_strings_pass():
    mask = np.zeros((H, W), bool)
    mask[3:30, 5:7] = True
    from retinamask_d2.data.coco_json import _decode_rle_string

    counts = _decode_rle_string("here", rle(mask)["counts"])
    assert sum(counts) == H * W and counts[1] == 27  # first run of ones: 27 rows of column 5


@pytest.mark.parametrize("bbox", [(2**63, 4, 10, 10), (4, 4, 10, -1e9), (-401, 4, 10, 10)])
def test_boxes_far_beyond_the_image_are_refused(tmp_path, bbox):
    message = _refusal(tmp_path, [ann(1), ann(9, bbox=bbox)])
    assert "annotation id 9 (image id 1, '1.png'): 'bbox'" in message
    assert "beyond 10x the image's 40x32" in message


def test_ids_must_be_unique_and_entries_well_typed(tmp_path):
    images = [{"id": 1, "file_name": n, "width": W, "height": H} for n in ("a.png", "b.png")]
    message = _refusal(tmp_path, [ann(1)], images=images)
    assert "image id 1: 'b.png' and 'a.png' share this id" in message
    images = [{"id": 1, "file_name": "1.png", "width": "40", "height": H}]
    assert "'width' must be an integer" in _refusal(tmp_path, [ann(1)], images=images)
    categories = [{"id": 1, "name": "cat"}, {"id": 1, "name": "dog"}]
    assert "category id 1 appears twice" in _refusal(tmp_path, [ann(1)], categories=categories)
    assert "'id' must be an integer" in _refusal(tmp_path, [ann("x")])
    assert "'iscrowd' must be 0 or 1" in _refusal(tmp_path, [{**ann(1), "iscrowd": 2}])
    no_image = {k: v for k, v in ann(1).items() if k != "image_id"}
    assert "'image_id' must be an integer, got None" in _refusal(tmp_path, [no_image])
    names = [{"id": 1, "name": "cat"}, {"id": 5, "name": float("nan")}]
    assert "category id 5: 'name' must be a non-empty string" in _refusal(
        tmp_path, [ann(1)], categories=names
    )


@pytest.mark.parametrize(
    "annotations, why",
    [
        ([{**ann(1), "iscrowd": 1}, {**ann(2), "iscrowd": 1}], "2 crowd (iscrowd 1"),
        ([ann(1, bbox=(4, 4, 0, 4)), ann(2, image_id=7)], "1 skipped (zero-area box), 1 skip"),
        ([], "'annotations' is empty"),
    ],
)
def test_a_training_set_with_nothing_to_train_on_says_why(tmp_path, annotations, why):
    cfg = coco_cfg()
    name = f"test_empty_{uuid.uuid4().hex[:8]}"
    cfg.DATASETS.COCO_JSON = ((name, *write_coco_json(tmp_path, annotations)),)
    cfg.DATASETS.TRAIN = (name,)
    with pytest.raises(CocoJsonError, match="train.json: ") as error:
        setup_datasets(cfg)
    assert why in str(error.value)


def _exif_rotated_jpeg(path: Path, width: int, height: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: shown as height x width
    Image.new("RGB", (width, height), (90, 30, 200)).save(path, exif=exif.tobytes())


def test_image_headers_are_checked_before_training_and_listed_together(tmp_path):
    json_file, image_root = write_coco_json(tmp_path, [ann(1)])
    root = Path(image_root)
    images = json.loads(Path(json_file).read_text())["images"]
    for i, name in enumerate(["zero.png", "small.png", "rotated.jpg", "text.png"], start=3):
        images.append({"id": i, "file_name": name, "width": W, "height": H})
    (root / "zero.png").write_bytes(b"")
    cv2.imwrite(str(root / "small.png"), np.zeros((H - 2, W, 3), np.uint8))
    _exif_rotated_jpeg(root / "rotated.jpg", W, H)  # the json gives the stored size
    (root / "text.png").write_text("not an image")
    data = json.loads(Path(json_file).read_text())
    Path(json_file).write_text(json.dumps({**data, "images": images}))
    with pytest.raises(CocoJsonError) as error:
        check_coco_json(json_file, image_root)
    message = str(error.value)
    assert message.startswith(f"{json_file}: 4 of 6 image files cannot be used")
    assert f"image id 3: {root / 'zero.png'}: not an image file" in message
    assert f"image id 4: {root / 'small.png'}: the file is 40x30, the json says 40x32" in message
    assert "image id 5: " in message and "32x40 after its EXIF rotation (orientation 6)" in message
    assert f"image id 6: {root / 'text.png'}: not an image file" in message


def test_exif_rotated_images_with_the_rotated_size_pass(tmp_path):
    json_file, image_root = write_coco_json(tmp_path, [ann(1)])
    _exif_rotated_jpeg(Path(image_root) / "r.jpg", H, W)  # stored 32x40, shown 40x32
    data = json.loads(Path(json_file).read_text())
    data["images"].append({"id": 3, "file_name": "r.jpg", "width": W, "height": H})
    Path(json_file).write_text(json.dumps(data))
    report = check_coco_json(json_file, image_root)  # raises if the rotated size were refused
    assert (report.usable, report.skipped) == (1, {})
    # The same file described with its stored (unrotated) size is refused.
    data["images"][-1].update(width=H, height=W)
    Path(json_file).write_text(json.dumps(data))
    with pytest.raises(CocoJsonError, match="after its EXIF rotation"):
        check_coco_json(json_file, image_root)


def _dataset(tmp_path, write_images) -> tuple[list[dict], object]:
    """A registered 2-image dataset whose files ``write_images(root)`` then replaces."""
    cfg = coco_cfg()
    cfg.INPUT.RANDOM_FLIP = "none"
    name = f"test_mapper_{uuid.uuid4().hex[:8]}"
    json_file, image_root = write_coco_json(tmp_path, [ann(1), ann(2, image_id=2)])
    cfg.DATASETS.COCO_JSON = ((name, json_file, image_root),)
    cfg.DATASETS.TRAIN = (name,)
    setup_datasets(cfg)
    write_images(Path(image_root))
    return DatasetCatalog.get(name), cfg


def test_training_reads_16_bit_images_as_the_demo_does(tmp_path):
    gray16 = (np.arange(H * W, dtype=np.uint16).reshape(H, W) * 50).astype(np.uint16)

    def sixteen_bit(root: Path) -> None:
        Image.fromarray(gray16).save(root / "1.png")  # mode I;16

    dicts, cfg = _dataset(tmp_path, sixteen_bit)
    mapped = ImageIOMapper(cfg, is_train=True)(dicts[0])
    demo = read_image(dicts[0]["file_name"], "BGR")
    assert torch.equal(mapped["image"], torch.from_numpy(demo.transpose(2, 0, 1).copy()))
    expected = np.round(gray16 / 257.0).astype(np.uint8)
    assert np.array_equal(demo[:, :, 0], expected) and 0 < expected.mean() < 250  # not white
    assert len(mapped["instances"]) == 1  # the rest of detectron2's mapper still ran


def test_images_that_fail_only_when_decoded_are_skipped_counted_then_stop(tmp_path, caplog):
    def truncate_first(root: Path) -> None:
        image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "1.png"), image)
        data = (root / "1.png").read_bytes()
        (root / "1.png").write_bytes(data[: len(data) // 2])

    dicts, cfg = _dataset(tmp_path, truncate_first)
    dataset = SeededMapDataset(dicts, ImageIOMapper(cfg, is_train=True))
    assert dataset.max_unreadable == 1  # 1% of 2 images, at least one
    with caplog.at_level(logging.WARNING, logger="retinamask_d2"):
        mapped = [dataset[(0, seed)] for seed in range(4)]
    assert all(m["file_name"].endswith("2.png") for m in mapped)  # the other image instead
    assert list(dataset.unreadable) == [dicts[0]["file_name"]]
    warnings = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(warnings) == 1 and "1.png: truncated or corrupt image data" in warnings[0]
    # A second broken file is past the limit: training stops with both named.
    data = Path(dicts[1]["file_name"]).read_bytes()
    Path(dicts[1]["file_name"]).write_bytes(data[:60])
    with pytest.raises(UnreadableImagesError) as error:
        dataset[(1, 0)]
    message = str(error.value)
    assert "2 of 2 training images cannot be decoded" in message
    assert "1.png: truncated" in message and "2.png: truncated" in message


def test_a_decoded_size_other_than_the_datasets_is_refused_naming_the_file(tmp_path):
    dicts, cfg = _dataset(tmp_path, lambda root: None)
    record = {**dicts[0], "height": H + 1}
    with pytest.raises(ImageReadError, match=r"1\.png: decoded as 40x32 .* says 40x33"):
        ImageIOMapper(cfg, is_train=True)(record)

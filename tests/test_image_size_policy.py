"""One image-size policy (INPUT.MAX_IMAGE_MEGAPIXELS, INPUT.MIN_IMAGE_SIDE) for training,
evaluation, the predictor and the demo: images outside it are named with their size, before
training starts and before any pixel is decoded."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retinamask_d2.data.coco_json import CocoJsonError
from retinamask_d2.data.image_io import ImageReadError, SizeLimits
from retinamask_d2.data.user_datasets import check_test_datasets, setup_datasets
from tests.coco_files import ann, png_header_only
from tests.common import get_tiny_cfg


def test_limits_follow_the_config_and_its_resize():
    cfg = get_tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (80, 40, 120), 200
    test, train = SizeLimits.from_config(cfg, False), SizeLimits.from_config(cfg, True)
    assert (test.short_edge, test.max_size, train.short_edge, train.max_size) == (64, 96, 40, 200)
    assert test.problem(640, 480) == train.problem(640, 480) == ""
    # 1000x9 at a 96-pixel long side: 9 x 0.096 = 0.86 rows, rounded to 1; training's long
    # side 200 keeps int(9 * 0.2 + 0.5) = 2 (N x 1 and 1 x N alike).
    assert test.problem(1000, 9) == (
        "1000x9 is resized to 96x1 (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST 64 / 96), under "
        "INPUT.MIN_IMAGE_SIDE 8 pixels on a side; cut it into less elongated pieces"
    )
    assert "is resized to 2x200 (INPUT.MIN_SIZE_TRAIN" in train.problem(9, 1000)
    assert test.problem(1000, 80) == ""  # 96x8
    assert test.problem(7, 7).startswith("7x7 is under INPUT.MIN_IMAGE_SIDE 8 pixels")
    assert test.problem(1, 1000).startswith("1x1000 is under")
    assert test.problem(8000, 8000) == "" and test.problem(8000, 8001).startswith(
        "8000x8001 (64 MP) is over the limit of 64 megapixels"
    )
    cfg.INPUT.MAX_IMAGE_MEGAPIXELS, cfg.INPUT.MIN_IMAGE_SIDE = 0, 1  # no limit; any side
    assert SizeLimits.from_config(cfg, False).problem(30000, 30000) == ""
    assert SizeLimits.from_config(cfg, False).problem(1000, 9) == ""  # 96x1 is allowed now


def _dataset(tmp_path: Path, sizes: list[tuple[int, int]], huge: bool = False):
    """A json with one image per size (PNG files; with ``huge``, header-only PNGs)."""
    folder = tmp_path / "images"
    folder.mkdir()
    images = []
    for i, (width, height) in enumerate(sizes, start=1):
        path = folder / f"{i}.png"
        if huge:
            png_header_only(path, width, height)
        else:
            Image.new("RGB", (width, height), (i, 2, 3)).save(path)
        images.append({"id": i, "file_name": path.name, "width": width, "height": height})
    data = {
        "images": images,
        "annotations": [ann(i, image_id=i, bbox=(0, 0, 3, 3)) for i in range(1, len(sizes) + 1)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}],
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    name = f"sizes_{uuid.uuid4().hex[:8]}"
    cfg = get_tiny_cfg(num_classes=2)
    cfg.DATASETS.COCO_JSON = ((name, str(tmp_path / "data.json"), str(folder)),)
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = (name,)
    return cfg, folder


def test_training_refuses_a_huge_header_before_decoding_it(tmp_path):
    cfg, folder = _dataset(tmp_path, [(64, 48), (30000, 30000)], huge=True)
    assert (folder / "2.png").stat().st_size < 300
    with pytest.raises(CocoJsonError) as error:
        setup_datasets(cfg)
    assert str(error.value) == (
        f"{tmp_path / 'data.json'}: image id 2: {folder / '2.png'}: 30000x30000 (900 MP) is over "
        "the limit of 64 megapixels; downscale it, or raise the limit "
        "(INPUT.MAX_IMAGE_MEGAPIXELS; demo: --max-megapixels) if memory allows"
    )


def test_training_and_evaluation_refuse_strips_the_resize_would_empty(tmp_path):
    cfg, folder = _dataset(tmp_path, [(1000, 9), (64, 48), (2, 60)])
    with pytest.raises(CocoJsonError) as error:
        setup_datasets(cfg)
    lines = str(error.value).splitlines()
    assert (
        lines[0]
        == f"{tmp_path / 'data.json'}: 2 of 3 image(s) are outside this config's size limits:"
    )
    assert lines[1].startswith(f"  image id 1: {folder / '1.png'}: 1000x9 is resized to 128x1")
    assert lines[2].startswith(f"  image id 3: {folder / '3.png'}: 2x60 is under")
    with pytest.raises(CocoJsonError, match="2 of 3 image"):
        check_test_datasets(cfg)
    cfg.INPUT.MIN_IMAGE_SIDE = 1
    setup_datasets(cfg)  # the same images pass a policy that allows them
    check_test_datasets(cfg)


def test_the_predictor_names_arrays_outside_the_limits(tmp_path):
    from retinamask_d2.predictor import RetinaMaskPredictor

    cfg = get_tiny_cfg()
    predictor = RetinaMaskPredictor(cfg)
    strip = np.zeros((9, 1000, 3), np.uint8)
    with pytest.raises(ImageReadError, match=r"^image 0 of the batch \(shape \(9, 1000, 3\)\): "):
        predictor.predict(strip)
    # A channels-first image whose width is 3: read as (H, W, C) it is 3 rows high.
    chw = np.zeros((3, 100, 3), np.uint8)
    with pytest.raises(ImageReadError) as error:
        predictor.predict(chw)
    assert "3 is under INPUT.MIN_IMAGE_SIDE" in str(error.value)
    assert str(error.value).endswith("if it is (C, H, W), pass array.transpose(1, 2, 0)")
    Image.new("RGB", (1000, 9)).save(tmp_path / "strip.png")
    with pytest.raises(ImageReadError, match=f"^{tmp_path / 'strip.png'}: 1000x9 is resized"):
        predictor.predict(tmp_path / "strip.png")
    # 64 rows at the long side's 128 / 1000: 8.2, kept as 8.
    assert predictor.predict(np.zeros((64, 1000, 3), np.uint8)).image_size == (64, 1000)


def test_configs_of_other_detectron2_models_get_the_default_limits():
    from detectron2.config import get_cfg

    limits = SizeLimits.from_config(get_cfg(), training=False)  # no RetinaMask keys
    assert (limits.max_megapixels, limits.min_side) == (64.0, 8)
    assert (limits.short_edge, limits.max_size) == (800, 1333)


def test_the_data_mapper_names_images_outside_the_limits(tmp_path):
    """Datasets registered elsewhere (not checked before training) meet the limits when read."""
    from retinamask_d2.data.mapper import ImageIOMapper

    cfg = get_tiny_cfg()
    Image.new("RGB", (1000, 9)).save(tmp_path / "strip.png")
    record = {"file_name": str(tmp_path / "strip.png"), "height": 9, "width": 1000, "image_id": 1}
    for is_train in (True, False):  # the long side's cap is 128 in both
        with pytest.raises(ImageReadError, match="strip.png: 1000x9 is resized to 128x1"):
            ImageIOMapper(cfg, is_train=is_train)(dict(record))
    cfg.INPUT.MIN_IMAGE_SIDE = 1
    assert ImageIOMapper(cfg, is_train=False)(dict(record))["image"].shape == (3, 1, 128)

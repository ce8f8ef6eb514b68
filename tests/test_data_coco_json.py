"""Users' COCO-format datasets: checks that name the file and annotation, skips that are counted,
automatic mask format and class count, registration from the config and the command line."""

import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog

from retinamask_d2.data.coco_json import CocoJsonError, check_coco_json, register_coco_json
from retinamask_d2.data.user_datasets import setup_datasets
from tests.coco_files import SQUARE, H, W, ann, coco_cfg, rle, write_coco_json
from train_net import CLI_DATASET_NAMES, argument_parser, dataset_options

CLI_TRAIN_NAME, CLI_TEST_NAME = CLI_DATASET_NAMES["train"], CLI_DATASET_NAMES["test"]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major pixels, starting with zeros."""
    flat = mask.flatten(order="F").astype(int)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": ([0] + counts) if flat[0] else counts}


def _register(tmp_path, annotations, **kwargs) -> str:
    name = f"test_coco_json_{uuid.uuid4().hex[:8]}"
    register_coco_json(name, *write_coco_json(tmp_path, annotations, **kwargs))
    return name


def test_loads_like_detectron2_with_contiguous_ids_and_keeps_annotation_ids(tmp_path):
    name = _register(tmp_path, [ann(7), ann(8, image_id=2, category_id=5)])
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert [(a["id"], a["category_id"]) for d in dicts for a in d["annotations"]] == [
        (7, 0),
        (8, 1),
    ]
    assert dicts[0]["file_name"] == str(tmp_path / "images" / "1.png")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "dog"] and meta.evaluator_type == "coco"
    assert meta.json_file == str(tmp_path / "train.json")
    assert meta.has_masks and not meta.has_rle_masks
    assert DatasetCatalog.get(name) is dicts  # checked and loaded once per process


@pytest.mark.parametrize(
    "bad, message",
    [
        (ann(42, category_id=3), "annotation id 42 (image id 1, '1.png'): category_id 3"),
        (ann(43, bbox=(1, 2, 3)), "annotation id 43 (image id 1, '1.png'): 'bbox' must be 4"),
        (ann(44, bbox=(1, 2, float("nan"), 3)), "annotation id 44"),
        (ann(45, segmentation={"size": [H + 1, W], "counts": "abc"}), "RLE size [33, 40]"),
        (ann(46, segmentation=SQUARE), "annotation id 46 (image id 1, '1.png'): polygon"),
        (ann(47, segmentation="x"), "neither polygons nor an RLE"),
    ],
)
def test_errors_name_the_file_and_the_annotation(tmp_path, bad, message):
    json_file, image_root = write_coco_json(tmp_path, [ann(1), bad])
    with pytest.raises(CocoJsonError) as error:
        check_coco_json(json_file, image_root)
    assert str(error.value).startswith(f"{json_file}: annotation id {bad['id']}")
    assert message in str(error.value)


def test_errors_for_missing_images_duplicate_ids_and_bad_files(tmp_path):
    json_file, image_root = write_coco_json(tmp_path, [ann(1)])
    (Path(image_root) / "2.png").unlink()
    with pytest.raises(
        CocoJsonError, match=r"1 of 2 image files are missing .* image id 2: .*2\.png"
    ):
        check_coco_json(json_file, image_root)
    json_file, image_root = write_coco_json(tmp_path, [ann(1), ann(1, image_id=2)])
    with pytest.raises(CocoJsonError, match="annotation id 1: 2 annotations share this id"):
        check_coco_json(json_file, image_root)
    json_file, _ = write_coco_json(
        tmp_path, [ann(1)], images=[{"id": 1, "file_name": "1.png", "width": W}]
    )
    with pytest.raises(CocoJsonError, match="train.json: image 1 has no 'height'"):
        check_coco_json(json_file, image_root)
    Path(json_file).write_text("{not json")
    with pytest.raises(CocoJsonError, match="train.json: not valid JSON"):
        check_coco_json(json_file, image_root)
    with pytest.raises(CocoJsonError, match="nope.json: no such file"):
        check_coco_json(str(tmp_path / "nope.json"), image_root)


def test_skips_what_is_safe_to_skip_and_logs_counts_with_ids(tmp_path, caplog):
    annotations = [
        ann(1),
        ann(2, segmentation=[[1.0, 1.0, 5.0, 5.0]]),  # 2 points only: skipped
        ann(3, segmentation=[[1.0, 1.0, 5.0, 5.0], SQUARE]),  # loses its 2-point part
        ann(4, bbox=(4, 4, 0, 10)),  # zero width
        ann(5, bbox=(4, 4, 10, -1)),  # negative height
        ann(6, bbox=(W + 2, 4, 10, 10)),  # entirely right of the image
        ann(7, bbox=(30, 20, 15, 15)),  # partly outside: kept, clipped by the loader
        ann(8, image_id=99),  # an image the json does not list
        ann(9, segmentation=[]),  # no mask while the others have one
    ]
    name = _register(tmp_path, annotations)
    with caplog.at_level(logging.INFO, logger="retinamask_d2"):
        dicts = DatasetCatalog.get(name)
    kept = [a["id"] for d in dicts for a in d["annotations"]]
    assert kept == [1, 3, 7]
    assert dicts[0]["annotations"][1]["segmentation"] == [SQUARE]
    log = caplog.text
    json_file = str(tmp_path / "train.json")
    assert f"{json_file}: skipped 1 annotation(s), no polygon with 3 or more points: ids 2" in log
    assert "skipped 2 annotation(s), zero-area box: ids 4, 5" in log
    assert "skipped 1 annotation(s), box entirely outside its image: ids 6" in log
    assert "skipped 1 annotation(s), image id not in 'images': ids 8" in log
    assert "skipped 1 annotation(s), no segmentation while other annotations have one: ids 9" in log
    assert "dropped polygon parts with fewer than 3 points from 1 annotation(s): ids 3" in log
    assert "1 box(es) partly outside their image are clipped to it: ids 7" in log


def test_rle_masks_compressed_or_not_switch_to_bitmask_and_decode_to_the_same_pixels(tmp_path):
    disk = np.zeros((H, W), bool)
    disk[10:20, 20:34] = True
    disk[14:16, 26:28] = False  # a hole: only RLE can say this
    corner = np.zeros((H, W), bool)
    corner[24:30, 0:6] = True
    annotations = [
        ann(1),
        ann(2, bbox=(20, 10, 14, 10), segmentation=rle(disk)),
        ann(3, bbox=(0, 24, 6, 6), segmentation=_uncompressed_rle(corner)),
    ]
    json_file, image_root = write_coco_json(tmp_path, annotations)
    cfg = coco_cfg()
    name = f"test_rle_{uuid.uuid4().hex[:8]}"
    cfg.DATASETS.COCO_JSON = ((name, json_file, image_root),)
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.RETINANET.NUM_CLASSES = 80
    setup_datasets(cfg)
    assert cfg.INPUT.MASK_FORMAT == "bitmask"
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 2
    mapped = DatasetMapper(cfg, is_train=True)(DatasetCatalog.get(name)[0])
    masks = mapped["instances"].gt_masks.tensor
    square = np.zeros((H, W), bool)
    square[4:14, 4:14] = True  # what pycocotools makes of SQUARE
    assert torch.equal(masks[0], torch.from_numpy(square))
    assert torch.equal(masks[1], torch.from_numpy(disk))
    assert torch.equal(masks[2], torch.from_numpy(corner))


def test_polygons_keep_polygon_format_and_no_masks_is_an_error(tmp_path):
    cfg = coco_cfg()
    name = f"test_poly_{uuid.uuid4().hex[:8]}"
    cfg.DATASETS.COCO_JSON = ((name, *write_coco_json(tmp_path, [ann(1)])),)
    cfg.DATASETS.TRAIN = (name,)
    setup_datasets(cfg)
    assert cfg.INPUT.MASK_FORMAT == "polygon"
    boxes_only = tmp_path / "boxes"
    boxes_only.mkdir()
    cfg = coco_cfg()
    name = f"test_boxes_{uuid.uuid4().hex[:8]}"
    cfg.DATASETS.COCO_JSON = ((name, *write_coco_json(boxes_only, [ann(1, segmentation=[])])),)
    cfg.DATASETS.TRAIN = (name,)
    with pytest.raises(
        CocoJsonError, match=r"boxes/train.json: no annotation has a 'segmentation'"
    ):
        setup_datasets(cfg)
    cfg.MODEL.MASK_ON = False
    setup_datasets(cfg)  # boxes only is fine without the mask branch


def test_command_line_flags_register_train_and_test_sets(tmp_path):
    json_file, image_root = write_coco_json(tmp_path, [ann(1), ann(2, image_id=2, category_id=5)])
    parser = argument_parser()
    args = parser.parse_args(
        ["--train-json", json_file, "--train-images", image_root]
        + ["--test-json", json_file, "--test-images", image_root]
    )
    cfg = coco_cfg()
    cfg.merge_from_list(dataset_options(args))
    assert cfg.DATASETS.TRAIN == (CLI_TRAIN_NAME,) and cfg.DATASETS.TEST == (CLI_TEST_NAME,)
    assert cfg.DATASETS.COCO_JSON[0] == (CLI_TRAIN_NAME, json_file, image_root)
    setup_datasets(cfg)
    assert len(DatasetCatalog.get(CLI_TRAIN_NAME)) == 2
    assert MetadataCatalog.get(CLI_TEST_NAME).json_file == json_file
    # The test set is only registered, not loaded, and its classes are known already.
    assert MetadataCatalog.get(CLI_TEST_NAME).thing_classes == ["cat", "dog"]
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 2
    assert cfg.MODEL.RETINAMASK.CLASS_NAMES == ["cat", "dog"]
    assert cfg.MODEL.RETINAMASK.DATASET_CATEGORY_IDS == [1, 5]
    with pytest.raises(CocoJsonError, match="--train-json and --train-images must be given"):
        dataset_options(parser.parse_args(["--train-json", json_file]))
    cfg.DATASETS.COCO_JSON = (("only_a_name", json_file),)
    with pytest.raises(CocoJsonError, match=r"DATASETS.COCO_JSON: each entry must be \(name"):
        setup_datasets(cfg)


def test_synthetic_names_are_registered_and_say_how_to_make_missing_data(tmp_path, monkeypatch):
    from retinamask_d2.data import SYNTHETIC_DATASETS, datasets_root, register_synthetic

    monkeypatch.setenv("RETINAMASK_DATASETS", str(tmp_path))
    assert datasets_root() == tmp_path
    for name in SYNTHETIC_DATASETS:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    try:
        register_synthetic()
        with pytest.raises(CocoJsonError, match="python -m retinamask_d2.data.synthetic --output"):
            DatasetCatalog.get("retinamask_synthetic_train")
        assert MetadataCatalog.get("retinamask_synthetic_val").thing_classes[-1] == "bar"
    finally:
        for name in SYNTHETIC_DATASETS:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        monkeypatch.delenv("RETINAMASK_DATASETS")
        register_synthetic()

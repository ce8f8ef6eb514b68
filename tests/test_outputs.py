"""The demo's outputs from hand-made Instances: cut-outs, COCO results and the drawing."""

import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from retinamask_d2.data.classes import class_name
from retinamask_d2.evaluation.coco_results import coco_results
from retinamask_d2.visualization.cutouts import make_cutouts
from retinamask_d2.visualization.draw import draw_instances

H, W = 10, 12


def _instances(masks: np.ndarray, boxes, classes, scores) -> Instances:
    instances = Instances((masks.shape[1], masks.shape[2]))
    instances.pred_masks = torch.as_tensor(masks, dtype=torch.bool)
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    instances.pred_classes = torch.tensor(classes)
    instances.scores = torch.tensor(scores)
    return instances


@pytest.fixture
def image() -> np.ndarray:
    """Every pixel different, so a cut-out copying the wrong pixels shows."""
    return (np.arange(H * W * 3).reshape(H, W, 3) % 251 + 1).astype(np.uint8)


@pytest.fixture
def three_instances() -> Instances:
    masks = np.zeros((3, H, W), dtype=bool)
    # an L shape: rows 2-4, columns 3-5, its mask bounding box holds 3 background pixels
    for y, x in [(2, 3), (2, 4), (3, 3), (4, 3), (4, 4), (4, 5)]:
        masks[0, y, x] = True
    # masks[1] stays empty (RetinaMask keeps detections beyond the top 50 without masks)
    masks[2, 9, 11] = True  # one pixel in the bottom-right corner
    boxes = [[3.0, 2.0, 6.0, 5.0], [0.0, 0.0, 4.0, 4.0], [10.5, 8.25, 12.0, 10.0]]
    return _instances(masks, boxes, classes=[0, 1, 2], scores=[0.91234, 0.5, 0.0456])


@pytest.fixture
def metadata() -> Metadata:
    return Metadata(
        name="test_outputs",
        thing_classes=["cat", "hot dog", "a/b c"],
        thing_dataset_id_to_contiguous_id={1: 0, 7: 1, 9: 2},
    )


def test_cutouts_are_mask_box_crops_with_transparent_background(image, three_instances, metadata):
    cutouts = make_cutouts(image, three_instances, metadata)
    assert [c.index for c in cutouts] == [0, 2]  # the empty mask gives no cut-out

    l_shape = cutouts[0]
    assert l_shape.box == (3, 2, 6, 5)
    assert l_shape.rgba.shape == (3, 3, 4) and l_shape.rgba.dtype == np.uint8
    inside = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(l_shape.rgba[:, :, 3], inside * 255)
    crop = image[2:5, 3:6]
    np.testing.assert_array_equal(l_shape.rgba[inside, :3], crop[inside])
    np.testing.assert_array_equal(l_shape.rgba[~inside, :3], 0)  # no background colour left

    corner = cutouts[1]
    assert corner.box == (11, 9, 12, 10)
    np.testing.assert_array_equal(corner.rgba, np.append(image[9, 11], 255)[None, None])


def test_cutout_names_carry_image_index_class_and_score(image, three_instances, metadata):
    cutouts = make_cutouts(image, three_instances, metadata)
    assert cutouts[0].file_name("photo") == "photo_000_cat_0.912.png"
    assert cutouts[1].file_name("dir_photo") == "dir_photo_002_a-b-c_0.046.png"
    assert (
        make_cutouts(image, three_instances, Metadata())[0].file_name("p")
        == "p_000_class0_0.912.png"
    )


def test_class_name_falls_back_to_the_id(metadata):
    assert class_name(metadata, 1) == "hot dog"
    assert class_name(metadata, 3) == "class3"
    assert class_name(Metadata(), 0) == "class0"


def test_coco_results_xywh_boxes_rle_masks_and_dataset_category_ids(three_instances, metadata):
    results = coco_results(
        three_instances, image_id=5, file_name="sub/photo.jpg", metadata=metadata
    )
    assert len(results) == 3
    assert [r["category_id"] for r in results] == [1, 7, 9]  # contiguous 0, 1, 2 mapped back
    assert results[0]["bbox"] == pytest.approx([3.0, 2.0, 3.0, 3.0])
    assert results[2]["bbox"] == pytest.approx([10.5, 8.25, 1.5, 1.75])
    assert [r["score"] for r in results] == pytest.approx([0.91234, 0.5, 0.0456])
    assert all(r["image_id"] == 5 and r["file_name"] == "sub/photo.jpg" for r in results)
    for result, mask in zip(results, three_instances.pred_masks.numpy()):
        assert result["segmentation"]["size"] == [H, W]
        np.testing.assert_array_equal(mask_util.decode(result["segmentation"]), mask)
    json.dumps(results)  # the RLE counts are str, so the results serialise as they are


def test_coco_results_without_id_mapping_keep_contiguous_ids(three_instances):
    results = coco_results(three_instances, 1, "a.png", Metadata(thing_classes=["x", "y", "z"]))
    assert [r["category_id"] for r in results] == [0, 1, 2]


def test_coco_results_refuse_a_class_the_dataset_does_not_map(three_instances):
    metadata = Metadata(name="two_classes", thing_dataset_id_to_contiguous_id={1: 0, 2: 1})
    with pytest.raises(ValueError, match="predicted class 2 .* two_classes"):
        coco_results(three_instances, 1, "a.png", metadata)


def test_coco_results_load_in_pycocotools(three_instances, metadata, tmp_path):
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 5, "file_name": "sub/photo.jpg", "height": H, "width": W}],
        "annotations": [],
        "categories": [{"id": i, "name": str(i)} for i in (1, 7, 9)],
    }
    gt.createIndex()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(coco_results(three_instances, 5, "sub/photo.jpg", metadata)))

    dt = gt.loadRes(str(path))

    anns = dt.loadAnns(dt.getAnnIds(imgIds=[5]))
    assert sorted(a["category_id"] for a in anns) == [1, 7, 9]
    l_shape = next(a for a in anns if a["category_id"] == 1)
    np.testing.assert_array_equal(dt.annToMask(l_shape), three_instances.pred_masks[0].numpy())


def test_coco_results_of_no_instances_are_empty(metadata):
    empty = _instances(np.zeros((0, H, W), bool), np.zeros((0, 4)), [], [])
    assert coco_results(empty, 1, "a.png", metadata) == []


def test_drawing_colours_the_mask_and_leaves_far_pixels_alone(metadata):
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    masks = np.zeros((1, 64, 64), dtype=bool)
    masks[0, 20:40, 20:40] = True
    instances = _instances(masks, [[20.0, 20.0, 40.0, 40.0]], classes=[0], scores=[0.9])

    drawing = draw_instances(image, instances, metadata, min_long_side=0)

    assert drawing.shape == image.shape and drawing.dtype == np.uint8
    change = np.abs(drawing.astype(int) - image).sum(axis=2)
    assert change[25:35, 25:35].mean() > 20  # the mask is tinted
    assert change[0:10, 50:64].max() <= 2  # the top-right corner is far from box and label


@pytest.mark.parametrize(
    "height, width, factor",
    [(128, 96, 4), (48, 80, 7), (300, 200, 2), (512, 100, 1), (700, 900, 1)],
)
def test_small_images_are_drawn_enlarged_by_a_whole_factor(height, width, factor):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[: height // 2] = 255
    empty = _instances(np.zeros((0, height, width), bool), np.zeros((0, 4)), [], [])
    drawing = draw_instances(image, empty, Metadata())
    assert drawing.shape == (height * factor, width * factor, 3)
    assert drawing[: height * factor // 2 - 1].min() == 255 and drawing[-1].max() == 0


def test_coco_results_carry_the_frame_in_degrees_when_the_instances_have_one(
    three_instances, metadata
):
    assert all("frame" not in r for r in coco_results(three_instances, 1, "a.png", metadata))
    three_instances.pred_frames = torch.tensor(
        [[4.5, 3.5, 3.0, 3.0, 0.0], [2.0, 2.0, 5.0, 1.0, math.pi / 6], [11.0, 9.0, 2, 1, -1.5]]
    )
    results = coco_results(three_instances, 1, "a.png", metadata)
    assert [r["frame"] for r in results] == [
        pytest.approx([4.5, 3.5, 3.0, 3.0, 0.0]),
        pytest.approx([2.0, 2.0, 5.0, 1.0, 30.0], abs=1e-5),
        pytest.approx([11.0, 9.0, 2.0, 1.0, -85.943669], abs=1e-5),
    ]
    json.dumps(results)  # plain floats

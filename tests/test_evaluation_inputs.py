"""Evaluation: box-only models give box AP only; test sets whose classes are not the model's
are refused (or mapped by name when asked); test images are read as the demo reads them."""

import uuid

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from PIL import Image

from retinamask_d2.data.coco_json import CocoJsonError, register_coco_json
from retinamask_d2.data.image_io import read_image
from retinamask_d2.data.synthetic import generate
from retinamask_d2.data.user_datasets import setup_datasets
from retinamask_d2.engine import Trainer
from retinamask_d2.evaluation.class_mapping import ClassRemap, check_test_classes, class_index_map
from tests.coco_files import ann, write_coco_json
from tests.common import build_tiny_model, get_tiny_cfg


def _val_cfg(tmp_path, **opts):
    generate(tmp_path, {"val": 2}, image_size=64, seed=3)
    name = f"eval_{uuid.uuid4().hex[:8]}"
    cfg = get_tiny_cfg(num_classes=4)
    cfg.DATASETS.COCO_JSON = ((name, str(tmp_path / "val.json"), str(tmp_path / "val")),)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), (name,)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    setup_datasets(cfg, training=False)
    return cfg, name


def test_box_only_inference_evaluates_boxes_only(tmp_path):
    cfg, name = _val_cfg(tmp_path, **{"MODEL.RETINAMASK.TEST_TOPK_MASKS": 0})
    results = Trainer.test(cfg, build_tiny_model(cfg).eval())
    assert set(results) == {"bbox"} and np.isfinite(results["bbox"]["AP"])
    cfg.defrost()
    cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = 5
    assert set(Trainer.test(cfg, build_tiny_model(cfg).eval())) == {"bbox", "segm"}


def test_test_images_are_read_by_the_projects_reader(tmp_path):
    cfg, name = _val_cfg(tmp_path, **{"INPUT.MIN_SIZE_TEST": 64})  # the images' size: no resize
    file_name = next(iter(Trainer.build_test_loader(cfg, name)))[0]["file_name"]
    gray16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(gray16).save(file_name, format="PNG")  # same name, now 16-bit grayscale
    first = next(iter(Trainer.build_test_loader(cfg, name)))[0]
    expected = read_image(file_name, "BGR")
    assert first["file_name"] == file_name
    assert torch.equal(first["image"], torch.from_numpy(expected.transpose(2, 0, 1).copy()))
    assert 0 < float(first["image"].float().mean()) < 250  # detectron2's reader gives white


def _test_set(tmp_path, categories) -> str:
    name = f"classes_{uuid.uuid4().hex[:8]}"
    json_file, image_root = write_coco_json(tmp_path, [ann(1)], categories=categories)
    register_coco_json(name, json_file, image_root)
    return name


def _model_cfg(test_name, names, by_name=False):
    cfg = get_tiny_cfg(num_classes=len(names))
    cfg.DATASETS.TEST = (test_name,)
    cfg.MODEL.RETINAMASK.CLASS_NAMES = names
    cfg.MODEL.RETINAMASK.TEST_CLASSES_BY_NAME = by_name
    return cfg


def test_a_test_set_with_other_classes_is_refused_naming_both_lists(tmp_path):
    test = _test_set(tmp_path, [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}])
    check_test_classes(_model_cfg(test, ["cat", "dog"]))  # the same classes: fine
    with pytest.raises(CocoJsonError) as error:
        check_test_classes(_model_cfg(test, ["bird", "cat", "dog", "fish"]))
    message = str(error.value)
    assert message.startswith(str(tmp_path / "train.json"))
    assert "['cat', 'dog'] are not the model's ['bird', 'cat', 'dog', 'fish']" in message
    assert "MODEL.RETINAMASK.TEST_CLASSES_BY_NAME True" in message
    with pytest.raises(CocoJsonError, match="not the model's"):
        check_test_classes(_model_cfg(test, ["dog", "cat"]))  # same names, other order
    with pytest.raises(CocoJsonError, match="no class name is shared"):
        check_test_classes(_model_cfg(test, ["bird", "fish"], by_name=True))
    unnamed = _model_cfg(test, [])
    unnamed.MODEL.RETINANET.NUM_CLASSES = 4
    with pytest.raises(CocoJsonError, match="has 2 classes .* the model 4"):
        check_test_classes(unnamed)


def test_classes_mapped_by_name_when_asked(tmp_path):
    test = _test_set(tmp_path, [{"id": 1, "name": "cat"}, {"id": 5, "name": "dog"}])
    cfg = _model_cfg(test, ["bird", "dog", "cat", "fish"], by_name=True)
    index_map = class_index_map(cfg, test)
    assert index_map.tolist() == [-1, 1, 0, -1]

    class FixedModel(torch.nn.Module):
        def forward(self, batched_inputs):
            instances = Instances((10, 10))
            instances.pred_boxes = Boxes(torch.zeros(4, 4))
            instances.scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
            instances.pred_classes = torch.tensor([0, 1, 2, 3])
            return [{"instances": instances}]

    out = ClassRemap(FixedModel(), index_map)([{}])[0]["instances"]
    assert out.pred_classes.tolist() == [1, 0]  # dog, cat in the test set's order
    assert out.scores.tolist() == pytest.approx([0.8, 0.7])

"""
The detectron2 this project installs works for what RetinaMask needs.

On machines without a route to detectron2's source repository it is the patched pure-Python
install of the pb1-detectron2==0.6 sdist (third_party/detectron2/patches); each test here covers
something that failed on that sdist before a patch, or a part RetinaMask stands on.
"""

import importlib
import json
import os

import numpy as np
import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.common import MapDataset
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from detectron2.utils.testing import assert_instances_allclose

from retinamask_d2.env import has_c_extension
from tests.common import launch_retrying_exit_aborts


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.data",
        "detectron2.data.transforms",
        "detectron2.engine",
        "detectron2.evaluation",
        "detectron2.modeling",
        "detectron2.utils.visualizer",
        "detectron2.layers.deform_conv",
        "detectron2.layers.rotated_boxes",
    ],
)
def test_detectron2_modules_import(module):
    assert importlib.import_module(module).__name__ == module


def test_model_zoo_configs_are_installed():
    path = model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    assert os.path.isfile(path)
    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    assert cfg.MODEL.RETINANET.NUM_CLASSES == 80


@pytest.mark.skipif(has_c_extension(), reason="detectron2._C is present")
def test_missing_extension_names_the_op():
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 2.0, 2.0, 0.0]])
    with pytest.raises(RuntimeError, match="box_iou_rotated"):
        pairwise_iou_rotated(boxes, boxes)


def test_polygon_masks_to_bitmasks_with_numpy2():
    # A 4x4 square polygon rasterises to 16 pixels; np.bool (removed in numpy 2) was used here.
    square = [np.array([1, 1, 5, 1, 5, 5, 1, 5], dtype=np.float64)]
    bitmasks = BitMasks.from_polygon_masks(PolygonMasks([square]), 8, 8)
    assert bitmasks.tensor.dtype == torch.bool
    assert int(bitmasks.tensor.sum()) == 16


def test_map_dataset_replaces_a_failed_sample():
    # MapDataset retries with another index when the mapper returns None (a set was sampled
    # before the patch: TypeError on Python >= 3.11).
    data = MapDataset(list(range(4)), lambda x: None if x == 2 else x * 10)
    assert data[0] == 0 and data[1] == 10
    assert data[2] in {0, 10, 30}  # another sample, never None
    assert 2 not in data._fallback_candidates


def tiny_retinanet_cfg():
    """detectron2's own RetinaNet config, shrunk to run in a second on a CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.RETINANET.NUM_CLASSES = 2
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 64
    return cfg


def test_retinanet_from_detectron2_config_trains_and_infers():
    torch.manual_seed(0)
    model = build_model(tiny_retinanet_cfg())
    image = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    gt = Instances((64, 96), gt_boxes=Boxes(torch.tensor([[10.0, 8.0, 50.0, 40.0]])))
    gt.gt_classes = torch.tensor([1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    model.train()
    with EventStorage():
        losses = model([{"image": image, "instances": gt}])
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    before = [p.detach().clone() for p in model.parameters()]
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))

    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 128, "width": 192}])
    inst = out["instances"]
    assert inst.image_size == (128, 192)  # pasted back to the requested output size
    assert len(inst) <= 100
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 192).all() and (boxes[:, 3] <= 128).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all() if len(inst) > 1 else True
    assert set(inst.pred_classes.tolist()) <= {0, 1}


def test_traced_retinanet_matches_eager_on_another_image_size():
    # `import detectron2.export` needed caffe2 (gone from torch 2) before a patch.
    from detectron2.export import TracingAdapter

    cfg = tiny_retinanet_cfg()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # random weights: keep detections to compare
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    def inference(model, image):
        return model([{"image": image}])[0]["instances"]

    trace_image, test_image = torch.rand(3, 64, 96) * 255, torch.rand(3, 96, 128) * 255
    with torch.no_grad():
        adapter = TracingAdapter(model, trace_image, inference)
        traced = torch.jit.trace(adapter, (trace_image,))
        expected = inference(model, test_image)
        got = adapter.outputs_schema(traced(test_image))
    assert len(expected) > 0
    assert_instances_allclose(expected, got, size_as_tensor=True)


def test_lr_scheduler_hook_keeps_the_state_of_a_torch_scheduler():
    # torch 2 schedulers derive from LRScheduler, not _LRScheduler: before a patch the hook
    # checkpointed nothing for them, and a resumed run restarted the schedule.
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state = hooks.LRScheduler(optimizer, scheduler).state_dict()
    assert state["last_epoch"] == 7

    resumed_optimizer = torch.optim.SGD([param], lr=0.1)
    resumed = torch.optim.lr_scheduler.StepLR(resumed_optimizer, step_size=3)
    hooks.LRScheduler(resumed_optimizer, resumed).load_state_dict(state)
    assert resumed.last_epoch == 7
    assert resumed.get_last_lr() == pytest.approx([0.1 * 0.1**2])


@pytest.fixture
def tiny_coco(tmp_path):
    """A two-image COCO dataset whose instances are squares given as polygons."""
    import cv2

    images, annotations = [], []
    squares = {1: [(4, 4, 20, 20), (30, 10, 16, 24)], 2: [(8, 30, 30, 12)]}
    for image_id, boxes in squares.items():
        name = f"img{image_id}.png"
        cv2.imwrite(str(tmp_path / name), np.zeros((48, 64, 3), np.uint8))
        images.append({"id": image_id, "file_name": name, "height": 48, "width": 64})
        for x, y, w, h in boxes:
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 7,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [poly],
                }
            )
    json_file = tmp_path / "tiny.json"
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "sq"}]}
    json_file.write_text(json.dumps(coco))
    name = f"tiny_coco_{tmp_path.name}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def predictions_from_ground_truth(dataset_name, shift=0.0):
    """Instances equal to the ground truth (optionally shifted right by `shift` pixels)."""
    outputs = []
    for record in DatasetCatalog.get(dataset_name):
        h, w = record["height"], record["width"]
        annos = record["annotations"]
        boxes = torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos],
            dtype=torch.float32,
        )
        boxes[:, [0, 2]] += shift
        offset = np.array([shift, 0.0] * 4)
        polygons = [[np.asarray(p) + offset for p in a["segmentation"]] for a in annos]
        inst = Instances((h, w), pred_boxes=Boxes(boxes))
        inst.scores = torch.ones(len(annos))
        inst.pred_classes = torch.tensor([a["category_id"] for a in annos])
        inst.pred_masks = BitMasks.from_polygon_masks(PolygonMasks(polygons), h, w).tensor
        outputs.append(({"image_id": record["image_id"]}, {"instances": inst}))
    return outputs


@pytest.mark.parametrize("shift, expected_ap", [(0.0, 100.0), (40.0, 0.0)])
def test_coco_evaluator_bbox_and_segm_without_extension(tiny_coco, tmp_path, shift, expected_ap):
    evaluator = COCOEvaluator(
        tiny_coco, tasks=("bbox", "segm"), distributed=False, output_dir=None, use_fast_impl=False
    )
    evaluator.reset()
    for inputs, outputs in predictions_from_ground_truth(tiny_coco, shift):
        evaluator.process([inputs], [outputs])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(expected_ap)
    assert results["segm"]["AP"] == pytest.approx(expected_ap)


def _all_reduce_worker(out_dir):
    rank = comm.get_rank()
    value = torch.tensor([float(rank + 1), 10.0 * (rank + 1)])
    torch.distributed.all_reduce(value)
    gathered = comm.all_gather(rank)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"sum": value.tolist(), "world": comm.get_world_size(), "all": gathered}, f)


def test_launch_two_cpu_processes_all_reduce(tmp_path):
    launch_retrying_exit_aborts(
        _all_reduce_worker,
        2,
        num_machines=1,
        machine_rank=0,
        dist_url="auto",
        args=(str(tmp_path),),
    )
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"sum": [3.0, 30.0], "world": 2, "all": [0, 1]}

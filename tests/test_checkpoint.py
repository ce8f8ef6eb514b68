"""Starting RetinaMask from a detectron2 RetinaNet checkpoint."""

import logging

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from tests.common import get_tiny_cfg


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_retinanet_checkpoint_initialises_the_box_part_and_not_the_mask_head(tmp_path):
    # A plain detectron2 RetinaNet of the same size (P6 from res5, as detectron2 builds it),
    # trained "elsewhere" and saved by detectron2's checkpointer.
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINANET.NORM = ""  # detectron2 v0.6's own RetinaNet cannot build a GN head
    retinanet_cfg = cfg.clone()
    retinanet_cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    retinanet_cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    torch.manual_seed(1)
    retinanet = build_model(retinanet_cfg)
    with torch.no_grad():  # make every saved value differ from any initialisation
        for value in retinanet.state_dict().values():
            value.add_(1.0 + torch.rand_like(value.float()).to(value.dtype))
    DetectionCheckpointer(retinanet, save_dir=str(tmp_path)).save("retinanet")
    saved = retinanet.state_dict()

    torch.manual_seed(2)
    model = build_model(cfg)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = DetectionCheckpointer(model)
    records = _Records()
    checkpointer.logger.addHandler(records)
    try:
        checkpointer.load(str(tmp_path / "retinanet.pth"))
    finally:
        checkpointer.logger.removeHandler(records)
    loaded = model.state_dict()

    def same_as_saved(key: str) -> bool:
        return key in saved and saved[key].shape == loaded[key].shape

    # Everything RetinaNet has in the same shape comes from the checkpoint ...
    for key in filter(same_as_saved, loaded):
        assert torch.equal(loaded[key], saved[key]), key
    # ... the rest keeps its fresh values: the mask head, the self-adjusting statistics and P6
    # (fed by P5 here, by res5 in detectron2's RetinaNet: another shape).
    kept_fresh = {k for k in loaded if not same_as_saved(k)}
    for key in kept_fresh:
        assert torch.equal(loaded[key], fresh[key]), key
    assert kept_fresh == {
        "backbone.top_block.p6.weight",
        "box_reg_loss.running_mean",
        "box_reg_loss.running_var",
        *(k for k in loaded if k.startswith("mask_branch.")),
    }
    assert {k for k in saved if k.startswith(("head.", "backbone.bottom_up."))} <= set(loaded)
    assert saved["backbone.top_block.p6.weight"].shape[1] == 512  # res5 of ResNet-18

    # detectron2's checkpointer says what it did not load, and why.
    log = "\n".join(records.messages)
    assert "backbone.top_block.p6.weight" in log and "incompatible shapes" in log
    assert "not found in the checkpoint" in log
    assert "mask_branch.mask_head" in log and "box_reg_loss" in log

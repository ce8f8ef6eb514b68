"""The RetinaMask meta-architecture end to end on tiny CPU models and images."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from retinamask_d2 import RetinaMask
from retinamask_d2.modeling import SelfAdjustingSmoothL1Loss
from retinamask_d2.modeling.retinanet_head import build_retinanet_head
from tests.common import build_tiny_model, get_tiny_cfg

H, W = 96, 128  # padded to 96 x 128: P7 is 1 x 1, the case where RetinaNet's in-place
# sigmoid would write into the training logits if the mask RoIs reused forward_inference


def _annotated(seed: int = 0, mask_format: str = "polygon") -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, H, W, generator=g) * 255
    inst = Instances((H, W))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 20.0, 120.0, 90.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    if mask_format == "polygon":
        inst.gt_masks = PolygonMasks(
            [[[10, 10, 60, 10, 60, 50, 10, 50.0]], [[70, 20, 120, 20, 95, 90.0]]]
        )
    else:
        masks = torch.zeros(2, H, W, dtype=torch.bool)
        masks[0, 10:50, 10:60] = True
        masks[1, 20:90, 80:110] = True
        inst.gt_masks = BitMasks(masks)
    return {"image": image, "instances": inst, "height": H, "width": W}


def _unannotated(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((H, W), gt_boxes=Boxes(torch.zeros(0, 4)))
    inst.gt_classes = torch.zeros(0, dtype=torch.int64)  # what DatasetMapper gives: no gt_masks
    return {"image": torch.rand(3, H, W, generator=g) * 255, "instances": inst}


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_is_a_registered_retinanet_subclass():
    model = build_tiny_model()
    assert isinstance(model, RetinaMask)
    from detectron2.modeling.meta_arch.retinanet import RetinaNet

    assert isinstance(model, RetinaNet)
    assert isinstance(model.box_reg_loss, SelfAdjustingSmoothL1Loss)
    assert model.anchor_matcher.allow_low_quality_matches
    assert model.box2box_transform.weights == (10.0, 10.0, 5.0, 5.0)
    assert model.test_nms_thresh == 0.4
    # P6 is computed from P5 (a 64-channel FPN map), not from res5 (512 channels in R-18).
    assert model.backbone.top_block.p6.in_channels == 64
    assert model.backbone.top_block.in_feature == "p5"


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_train_step_returns_the_three_losses_and_updates_every_part(mask_format):
    torch.manual_seed(0)
    model = build_tiny_model()
    with EventStorage():
        losses = model([_annotated(0, mask_format), _annotated(1, mask_format)])
        assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
        assert all(torch.isfinite(v) and v > 0 for v in losses.values())
        # An untrained mask head predicts ~0.5 everywhere: BCE close to log 2.
        assert losses["loss_mask"].item() == pytest.approx(0.693, abs=0.01)
        sum(losses.values()).backward()
    for part in (model.backbone.bottom_up, model.backbone, model.head, model.mask_branch):
        assert _grad_norm(part) > 0
    # The self-adjusting statistics moved away from their start (0.11, 0).
    assert bool((model.box_reg_loss.running_var > 0).all())


def test_mask_loss_gradient_reaches_fpn_and_backbone_but_not_box_head():
    torch.manual_seed(0)
    model = build_tiny_model()
    with EventStorage():
        model([_annotated()])["loss_mask"].backward()
    assert _grad_norm(model.mask_branch.mask_head) > 0
    fpn = model.backbone
    # Both GT boxes (sqrt area 45 and 59 px) pool from P3; P4 and P5 reach P3 top-down.
    for conv in (fpn.fpn_lateral3, fpn.fpn_lateral4, fpn.fpn_lateral5, fpn.fpn_output3):
        assert _grad_norm(conv) > 0
    assert _grad_norm(fpn.fpn_output4) == 0 and _grad_norm(fpn.fpn_output5) == 0
    assert _grad_norm(model.backbone.bottom_up.stem) > 0  # the very first conv of the ResNet
    assert _grad_norm(model.backbone.top_block) == 0  # P6/P7 feed only the box branch
    assert _grad_norm(model.head) == 0


def test_images_without_annotations():
    torch.manual_seed(0)
    model = build_tiny_model()
    with EventStorage():
        mixed = model([_annotated(), _unannotated()])
        assert all(torch.isfinite(v) for v in mixed.values())
        assert mixed["loss_mask"] > 0
        # No positive RoI in the whole batch: the mask loss is a zero that keeps a graph
        # through the mask head (as detectron2 does), so backward and DDP work unchanged.
        empty = model([_unannotated(1), _unannotated(2)])
        assert empty["loss_mask"].item() == 0.0 and empty["loss_box_reg"].item() == 0.0
        sum(empty.values()).backward()
    head_grads = [p.grad for p in model.mask_branch.mask_head.parameters()]
    assert all(g is not None and not g.any() for g in head_grads)


def test_training_rois_are_the_current_top_detections():
    torch.manual_seed(0)
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.TRAIN_TOPK = 7
    model = build_model(cfg)
    with torch.no_grad():
        model.head.cls_score.bias.fill_(0.0)  # scores ~0.5: many detections pass 0.05
        batch = [_annotated()]
        images = model.preprocess_image(batch)
        features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
        predictions = model.head(features)
        pred_logits, pred_deltas = model._transpose_dense_predictions(
            predictions, [model.num_classes, 4]
        )
        anchors = model.anchor_generator(features)
        selected = model.detect_mask_training_rois(images, anchors, pred_logits, pred_deltas)
        # Independent of training mode: RetinaNet's own test-time path on the same outputs.
        reference = model.forward_inference(images, features, [list(p) for p in predictions])
    assert len(selected[0]) == 7
    torch.testing.assert_close(selected[0].pred_boxes.tensor, reference[0].pred_boxes.tensor[:7])
    torch.testing.assert_close(selected[0].scores, reference[0].scores[:7])


def test_training_without_detections_uses_the_gt_boxes():
    # At initialisation (prior 0.01) no anchor scores above 0.05: the detections are empty and
    # the GT boxes alone train the mask head.
    torch.manual_seed(0)
    model = build_tiny_model()
    batch = [_annotated()]
    with torch.no_grad():
        images = model.preprocess_image(batch)
        features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
        pred_logits, pred_deltas = model._transpose_dense_predictions(
            model.head(features), [model.num_classes, 4]
        )
        dets = model.detect_mask_training_rois(
            images, model.anchor_generator(features), pred_logits, pred_deltas
        )
    assert len(dets[0]) == 0
    with EventStorage() as storage:
        losses = model(batch)
        assert storage.latest()["retinamask/num_mask_rois"][0] == 2  # the 2 GT boxes
    assert losses["loss_mask"] > 0


@pytest.mark.parametrize("drop_unmasked", [False, True])
def test_inference_returns_masks_at_the_requested_size(drop_unmasked):
    torch.manual_seed(0)
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.DROP_UNMASKED = drop_unmasked
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(0.0)
        outputs = model([{"image": torch.rand(3, H, W) * 255, "height": 2 * H, "width": 2 * W}])
    result = outputs[0]["instances"]
    assert result.image_size == (2 * H, 2 * W)
    assert len(result) == (50 if drop_unmasked else 100)
    assert result.pred_masks.shape == (len(result), 2 * H, 2 * W)
    assert result.pred_masks.dtype == torch.bool
    assert bool((result.scores[:-1] >= result.scores[1:]).all())
    assert set(result.pred_classes.tolist()) == {0, 1, 2}  # every class of the 3-class head
    assert all(result.pred_masks[:50].flatten(1).any(dim=1))  # untrained: ~half the pixels
    assert not result.pred_masks[50:].any()  # kept detections beyond the top 50: empty masks
    assert result.pred_boxes.tensor[:, 2].max() <= 2 * W  # boxes scaled and clipped


def test_inference_without_detections():
    # Untrained (prior 0.01 < score threshold 0.05): no detection, an empty but complete result.
    model = build_tiny_model().eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, H, W) * 255}])
    result = out["instances"]
    assert len(result) == 0
    assert result.pred_masks.shape == (0, H, W)


def test_training_visualisation_logs_images():
    cfg = get_tiny_cfg()
    cfg.VIS_PERIOD = 1
    model = build_model(cfg)
    with EventStorage() as storage:
        model([_annotated()])
        names = [name for name, _, _ in storage._vis_data]
    assert any("GT bounding boxes" in n for n in names)  # RetinaNet's, from the mask RoIs
    assert any("mask prediction" in n for n in names)  # detectron2's mask head


def test_identical_results_under_a_fixed_seed():
    def run() -> tuple[dict, Instances]:
        torch.manual_seed(42)
        model = build_tiny_model()
        with EventStorage():
            losses = {k: v.detach() for k, v in model([_annotated(), _unannotated()]).items()}
        model.eval()
        with torch.no_grad():
            model.head.cls_score.bias.fill_(-1.0)
            (out,) = model([{"image": _annotated(3)["image"]}])
        return losses, out["instances"]

    (losses_a, result_a), (losses_b, result_b) = run(), run()
    assert losses_a == losses_b
    assert len(result_a) > 0
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        a, b = result_a.get(field), result_b.get(field)
        assert torch.equal(getattr(a, "tensor", a), getattr(b, "tensor", b))


def test_self_adjusting_loss_with_beta_pinned_equals_detectron2_smooth_l1():
    # With BETA_MIN = BETA_MAX = 0.11 the self-adjusting loss is smooth L1 with beta 0.11, so the
    # replaced box loss must equal detectron2's own (positives, deltas and normaliser included).
    def box_loss(adjusting: bool) -> torch.Tensor:
        torch.manual_seed(0)
        cfg = get_tiny_cfg()
        cfg.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED = adjusting
        cfg.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MIN = 0.11
        cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.11
        model = build_model(cfg)
        assert (model.box_reg_loss is not None) == adjusting
        with EventStorage():
            return model([_annotated()])["loss_box_reg"].detach()

    plain = box_loss(False)
    assert plain > 0
    torch.testing.assert_close(box_loss(True), plain)


def test_box_loss_weight_scales_only_the_box_loss():
    def losses(weight: float) -> dict:
        torch.manual_seed(0)
        cfg = get_tiny_cfg()
        cfg.MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT = weight
        with EventStorage():
            return {k: v.detach() for k, v in build_model(cfg)([_annotated()]).items()}

    quarter, one = losses(0.25), losses(1.0)
    torch.testing.assert_close(quarter["loss_box_reg"] * 4, one["loss_box_reg"])
    assert quarter["loss_cls"] == one["loss_cls"] and quarter["loss_mask"] == one["loss_mask"]


def test_builds_from_a_frozen_config():
    cfg = get_tiny_cfg()
    cfg.freeze()  # as DefaultTrainer and DefaultPredictor pass it
    norm = build_model(cfg).head.cls_subnet[1]
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 32


def test_gn_head_is_the_one_detectron2_main_builds(monkeypatch):
    # detectron2 v0.6 probes RetinaNetHead's norm with get_norm(norm, 1), which rejects "GN";
    # detectron2 main probes with 32 channels and builds GN heads itself. Emulate main's probe
    # (a no-op on main) and check that our head has the same layers, parameter names and shapes
    # as main's own GN head, so that GN RetinaNet checkpoints of either version load.
    from detectron2.layers import ShapeSpec, get_norm
    from detectron2.modeling.meta_arch import retinanet

    def main_get_norm(norm, out_channels):
        return get_norm(norm, 32 if out_channels == 1 else out_channels)

    monkeypatch.setattr(retinanet, "get_norm", main_get_norm)
    cfg = get_tiny_cfg()
    shapes = [ShapeSpec(channels=64, stride=2**k) for k in range(3, 8)]
    upstream = retinanet.RetinaNetHead(cfg, shapes)
    ours = build_retinanet_head(cfg, shapes)

    def layers(head: torch.nn.Module) -> list[tuple[str, type, int | None]]:
        return [(n, type(m), getattr(m, "num_groups", None)) for n, m in head.named_modules()]

    assert layers(ours) == layers(upstream)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in ours.modules()) == 2  # 1 conv/tower
    shapes_of = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes_of == {k: v.shape for k, v in upstream.state_dict().items()}


def test_negative_train_topk_is_a_clear_error():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.TRAIN_TOPK = -1
    with pytest.raises(ValueError, match="MODEL.RETINAMASK.TRAIN_TOPK"):
        build_model(cfg)


def test_low_quality_matching_is_a_switch():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINAMASK.ALLOW_LOW_QUALITY_MATCHES = False
    assert not build_model(cfg).anchor_matcher.allow_low_quality_matches


def test_training_needs_instances():
    model = build_tiny_model()
    with EventStorage(), pytest.raises(ValueError, match="'instances'"):
        model([{"image": torch.rand(3, H, W)}])


def test_self_adjusting_loss_rejects_other_box_loss_types():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "giou"
    cfg.MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT = 1.0
    with pytest.raises(ValueError, match="SELF_ADJUSTING_SMOOTH_L1.ENABLED replaces"):
        build_model(cfg)
    cfg.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED = False
    assert build_model(cfg).box_reg_loss_type == "giou"


def test_box_loss_weight_is_refused_with_iou_losses():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "giou"
    cfg.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED = False
    with pytest.raises(ValueError, match="BOX_REG_LOSS_WEIGHT 1.0 with it"):
        build_model(cfg)

"""Official RetinaMask checkpoints converted: the converted model computes what the official
model computes, and a checkpoint that does not fit is refused with the tensors named.

The official checkpoints are written here as the official modules (maskrcnn-benchmark ResNet
with FrozenBN, FPN with P6/P7 from P5, RetinaNet head, Mask R-CNN mask head) name and shape their
tensors, with random values, for the bottleneck ResNet-50 of the paper configs with narrow
channels. The official forward pass is recomputed below from those tensors with
torch.nn.functional, and the official anchors enumerated as maskrcnn-benchmark does.
"""

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from torchvision.ops import roi_align

from retinamask_d2 import add_retinamask_config
from retinamask_d2.checkpoint import OfficialCheckpointError, convert_official_state_dict
from tests.common import CONFIGS_DIR

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import convert_official_weights  # noqa: E402

NUM_CLASSES = 80  # the official checkpoints' COCO classes (81 with background in the mask head)
BLOCKS = (3, 4, 6, 3)  # ResNet-50
# GN(32) of the FPN needs 2+ channels per group on the 1 x 1 P7
STEM, RES2, WIDTH, FPN_DIM, MASK_DIM = 8, 32, 8, 64, 16


def _cfg(gn: bool):
    name = "retinamask_R101_FPN_GN_2x_ms.yaml" if gn else "retinamask_R50_FPN_2x_ms.yaml"
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(CONFIGS_DIR / "paper" / name))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = STEM
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = RES2
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = WIDTH
    cfg.MODEL.FPN.OUT_CHANNELS = FPN_DIM
    cfg.MODEL.RETINANET.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.RETINANET.NUM_CONVS = 2
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = MASK_DIM
    return cfg


# ---- the official checkpoint layout ------------------------------------------------------------


def _generate_anchors(stride: int, sizes, ratios) -> np.ndarray:
    """maskrcnn-benchmark's generate_anchors (from Detectron): ratio enumeration of the
    stride x stride window, then scale enumeration of each."""

    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mkanchors(ws, hs, x, y):
        ws, hs = ws[:, None], hs[:, None]
        return np.hstack(
            [x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1)]
        )

    base = np.array([1, 1, stride, stride], dtype=np.float64) - 1
    w, h, x, y = whctrs(base)
    ratios = np.array(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(w * h / ratios))
    by_ratio = mkanchors(ws, np.round(ws * ratios), x, y)
    scales = np.array(sizes, dtype=np.float64) / stride
    rows = []
    for anchor in by_ratio:
        w, h, x, y = whctrs(anchor)
        rows.append(mkanchors(w * scales, h * scales, x, y))
    return np.vstack(rows)


def _official_state_dict(cfg, gn: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def conv(name, out_c, in_c, k, bias=True):
        sd[f"{name}.weight"] = torch.randn(out_c, in_c, k, k, generator=gen) / math.sqrt(
            in_c * k * k
        )
        if bias:
            sd[f"{name}.bias"] = torch.randn(out_c, generator=gen) * 0.1

    def frozen_bn(name, c):
        sd[f"{name}.weight"] = 1 + 0.2 * torch.randn(c, generator=gen)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=gen)
        sd[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=gen)

    def group_norm(name, c):
        sd[f"{name}.weight"] = 1 + 0.2 * torch.randn(c, generator=gen)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=gen)

    sd: dict[str, torch.Tensor] = {}
    conv("backbone.body.stem.conv1", STEM, 3, 7, bias=False)
    frozen_bn("backbone.body.stem.bn1", STEM)
    in_c = STEM
    for stage, count in enumerate(BLOCKS, 1):
        bottleneck, out_c = WIDTH * 2 ** (stage - 1), RES2 * 2 ** (stage - 1)
        for b in range(count):
            p = f"backbone.body.layer{stage}.{b}"
            if in_c != out_c:
                conv(f"{p}.downsample.0", out_c, in_c, 1, bias=False)
                frozen_bn(f"{p}.downsample.1", out_c)
            conv(f"{p}.conv1", bottleneck, in_c, 1, bias=False)
            frozen_bn(f"{p}.bn1", bottleneck)
            conv(f"{p}.conv2", bottleneck, bottleneck, 3, bias=False)
            frozen_bn(f"{p}.bn2", bottleneck)
            conv(f"{p}.conv3", out_c, bottleneck, 1, bias=False)
            frozen_bn(f"{p}.bn3", out_c)
            in_c = out_c
    for idx, c in ((2, RES2 * 2), (3, RES2 * 4), (4, RES2 * 8)):  # fpn_inner1 (C2) is unused
        for block, in_ch, k in (("fpn_inner", c, 1), ("fpn_layer", FPN_DIM, 3)):
            name = f"backbone.fpn.{block}{idx}"
            if gn:
                conv(f"{name}.0", FPN_DIM, in_ch, k)
                group_norm(f"{name}.1", FPN_DIM)
            else:
                conv(name, FPN_DIM, in_ch, k)
    conv("backbone.fpn.top_blocks.p6", FPN_DIM, FPN_DIM, 3)
    conv("backbone.fpn.top_blocks.p7", FPN_DIM, FPN_DIM, 3)
    num_anchors = 9
    for tower in ("cls_tower", "bbox_tower"):
        for i in range(cfg.MODEL.RETINANET.NUM_CONVS):
            index = 3 * i if gn else 2 * i  # Sequential of conv, [GroupNorm], ReLU
            conv(f"rpn.head.{tower}.{index}", FPN_DIM, FPN_DIM, 3)
            if gn:
                group_norm(f"rpn.head.{tower}.{index + 1}", FPN_DIM)
    conv("rpn.head.cls_logits", num_anchors * NUM_CLASSES, FPN_DIM, 3)
    conv("rpn.head.bbox_pred", num_anchors * 4, FPN_DIM, 3)
    sizes = cfg.MODEL.ANCHOR_GENERATOR.SIZES
    ratios = cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS[0]
    for level, stride in enumerate((8, 16, 32, 64, 128)):
        anchors = _generate_anchors(stride, sizes[level], ratios)
        sd[f"rpn.anchor_generator.cell_anchors.{level}"] = torch.from_numpy(anchors).float()
    in_ch = FPN_DIM
    for i in range(1, cfg.MODEL.ROI_MASK_HEAD.NUM_CONV + 1):
        conv(f"mask.feature_extractor.mask_fcn{i}", MASK_DIM, in_ch, 3)
        in_ch = MASK_DIM
    sd["mask.predictor.conv5_mask.weight"] = (
        torch.randn(MASK_DIM, MASK_DIM, 2, 2, generator=gen) / 8
    )
    sd["mask.predictor.conv5_mask.bias"] = 0.1 * torch.randn(MASK_DIM, generator=gen)
    conv("mask.predictor.mask_fcn_logits", NUM_CLASSES + 1, MASK_DIM, 1)
    return sd


# ---- the official forward pass, from the official tensors --------------------------------------


def _bn(x, sd, name):
    scale = sd[f"{name}.weight"] * sd[f"{name}.running_var"].rsqrt()
    shift = sd[f"{name}.bias"] - sd[f"{name}.running_mean"] * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def _conv(x, sd, name, stride=1, padding=0, gn=False):
    if gn:
        x = F.conv2d(x, sd[f"{name}.0.weight"], sd[f"{name}.0.bias"], stride, padding)
        return F.group_norm(x, 32, sd[f"{name}.1.weight"], sd[f"{name}.1.bias"])
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride, padding)


def _official_features(sd, x, gn: bool) -> list[torch.Tensor]:
    """P3-P7 of the official backbone (MSRA ResNet: the stride in the first 1x1 conv)."""
    x = F.relu(_bn(_conv(x, sd, "backbone.body.stem.conv1", 2, 3), sd, "backbone.body.stem.bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    c = []
    for stage, count in enumerate(BLOCKS, 1):
        for b in range(count):
            p = f"backbone.body.layer{stage}.{b}"
            stride = 2 if stage > 1 and b == 0 else 1
            out = F.relu(_bn(_conv(x, sd, f"{p}.conv1", stride), sd, f"{p}.bn1"))
            out = F.relu(_bn(_conv(out, sd, f"{p}.conv2", 1, 1), sd, f"{p}.bn2"))
            out = _bn(_conv(out, sd, f"{p}.conv3"), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = _bn(_conv(x, sd, f"{p}.downsample.0", stride), sd, f"{p}.downsample.1")
            x = F.relu(out + x)
        c.append(x)
    inner = _conv(c[3], sd, "backbone.fpn.fpn_inner4", gn=gn)
    results = [_conv(inner, sd, "backbone.fpn.fpn_layer4", 1, 1, gn=gn)]
    for feature, idx in ((c[2], 3), (c[1], 2)):
        lateral = _conv(feature, sd, f"backbone.fpn.fpn_inner{idx}", gn=gn)
        inner = lateral + F.interpolate(inner, scale_factor=2, mode="nearest")
        results.insert(0, _conv(inner, sd, f"backbone.fpn.fpn_layer{idx}", 1, 1, gn=gn))
    p6 = _conv(results[-1], sd, "backbone.fpn.top_blocks.p6", 2, 1)
    p7 = _conv(F.relu(p6), sd, "backbone.fpn.top_blocks.p7", 2, 1)
    return results + [p6, p7]


def _official_head(sd, feature, tower, out, num_convs, gn):
    x = feature
    for i in range(num_convs):
        index = 3 * i if gn else 2 * i
        x = F.conv2d(
            x, sd[f"rpn.head.{tower}.{index}.weight"], sd[f"rpn.head.{tower}.{index}.bias"], 1, 1
        )
        if gn:
            norm = f"rpn.head.{tower}.{index + 1}"
            x = F.group_norm(x, 32, sd[f"{norm}.weight"], sd[f"{norm}.bias"])
        x = F.relu(x)
    return F.conv2d(x, sd[f"rpn.head.{out}.weight"], sd[f"rpn.head.{out}.bias"], 1, 1)


def _official_anchors(sd, level, stride, height, width) -> torch.Tensor:
    """maskrcnn-benchmark's grid_anchors of one level, as continuous boxes (x2 + 1, y2 + 1)."""
    cell = sd[f"rpn.anchor_generator.cell_anchors.{level}"]
    ys, xs = torch.meshgrid(
        torch.arange(0, height * stride, stride, dtype=torch.float32),
        torch.arange(0, width * stride, stride, dtype=torch.float32),
        indexing="ij",
    )
    shifts = torch.stack([xs.reshape(-1), ys.reshape(-1)] * 2, dim=1)
    anchors = (shifts[:, None, :] + cell[None]).reshape(-1, 4)
    return anchors + torch.tensor([0.0, 0.0, 1.0, 1.0])


def _per_anchor(t: torch.Tensor, k: int) -> torch.Tensor:
    """(1, A*k, H, W) -> (H*W*A, k), the official postprocessor's and detectron2's order."""
    _, _, h, w = t.shape
    return t.view(1, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(-1, k)


def _official_mask_logits(sd, features, boxes, num_convs):
    """The official mask head for ``boxes`` (in the official box convention): LevelMapper
    (canonical 224 at level 4, P3-P5), unaligned RoIAlign 14x14 with 2x2 samples, convs,
    deconv, 81-class logits; and the level index of each box."""
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    levels = torch.floor(4 + torch.log2(area.sqrt() / 224 + 1e-6)).clamp(3, 5).long() - 3
    x = torch.zeros(len(boxes), FPN_DIM, 14, 14)
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    for level in range(3):
        idx = (levels == level).nonzero().squeeze(1)
        x[idx] = roi_align(features[level], rois[idx], 14, 1 / 2 ** (level + 3), 2, aligned=False)
    for i in range(1, num_convs + 1):
        name = f"mask.feature_extractor.mask_fcn{i}"
        x = F.relu(F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], 1, 1))
    x = F.relu(
        F.conv_transpose2d(
            x, sd["mask.predictor.conv5_mask.weight"], sd["mask.predictor.conv5_mask.bias"], 2
        )
    )
    logits = F.conv2d(
        x, sd["mask.predictor.mask_fcn_logits.weight"], sd["mask.predictor.mask_fcn_logits.bias"]
    )
    return logits, levels


# ---- the tests ----------------------------------------------------------------------------------


def _assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    # float32 rounding through 16 residual blocks, relative to the size of the values
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def _convert(official, model, cfg):
    return convert_official_state_dict(
        official,
        model,
        anchor_sizes=cfg.MODEL.ANCHOR_GENERATOR.SIZES,
        aspect_ratios=cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
    )


@pytest.mark.parametrize("gn", [False, True], ids=["FrozenBN-FPN", "GN-FPN-and-head"])
def test_converted_model_computes_the_official_scores_deltas_and_mask_logits(gn):
    cfg = _cfg(gn)
    official = _official_state_dict(cfg, gn)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model.load_state_dict(_convert(official, model, cfg), strict=True)
    image = torch.rand(3, 88, 120, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        x = model.preprocess_image([{"image": image}]).tensor
        features = model.backbone(x)
        levels = [features[f] for f in model.head_in_features]
        logits, deltas = model.head(levels)
        anchors = model.anchor_generator(levels)
        want_features = _official_features(official, x, gn)

        num_convs = cfg.MODEL.RETINANET.NUM_CONVS
        for level, stride in enumerate((8, 16, 32, 64, 128)):
            _assert_close(levels[level], want_features[level])
            feature = want_features[level]
            want_logits = _per_anchor(
                _official_head(official, feature, "cls_tower", "cls_logits", num_convs, gn),
                NUM_CLASSES,
            )
            want_deltas = _per_anchor(
                _official_head(official, feature, "bbox_tower", "bbox_pred", num_convs, gn), 4
            )
            want_anchors = _official_anchors(official, level, stride, *feature.shape[-2:])
            # pair every detectron2 anchor with the official anchor of the same box
            distance = torch.cdist(
                anchors[level].tensor, want_anchors, compute_mode="donot_use_mm_for_euclid_dist"
            )
            nearest, match = distance.min(dim=1)
            assert nearest.max() < 1e-3 and len(set(match.tolist())) == len(want_anchors)
            got_logits, got_deltas = (
                _per_anchor(logits[level], NUM_CLASSES),
                _per_anchor(deltas[level], 4),
            )
            _assert_close(got_logits, want_logits[match])
            _assert_close(got_deltas, want_deltas[match])

        # one box per pooling level (P3, P4, P5), away from the level boundaries
        boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [0, 0, 250, 230], [-10, -20, 500, 480]])
        mask_features = [features[f] for f in model.mask_branch.in_features]
        pooled = model.mask_branch.pooler(mask_features, [Boxes(boxes)])
        got_masks = model.mask_branch.mask_head.layers(pooled)
        want_masks, levels = _official_mask_logits(official, want_features[:3], boxes, 2)
    assert levels.tolist() == [0, 1, 2]
    assert got_masks.shape == (3, NUM_CLASSES, 28, 28)
    _assert_close(got_masks, want_masks[:, 1:])


def test_module_prefix_and_source_are_handled_by_the_script(tmp_path):
    cfg = _cfg(gn=False)
    official = _official_state_dict(cfg, gn=False)
    source = tmp_path / "official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official.items()}, "iteration": 1}, source)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    output = tmp_path / "converted.pth"
    assert convert_official_weights.main([str(source), str(output), "--config", str(config)]) == 0

    saved = torch.load(output, weights_only=False)
    assert saved["source"] == {
        "file": "official.pth",
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }
    assert saved["matching_heuristics"] is False
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(output))
    want = _convert(official, build_model(cfg), cfg)
    got = model.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    # the official mask predictor's background channel is dropped, class c + 1 becomes c
    assert torch.equal(
        got["mask_branch.mask_head.predictor.weight"],
        official["mask.predictor.mask_fcn_logits.weight"][1:],
    )


def _refusal(official, cfg) -> str:
    with pytest.raises(OfficialCheckpointError) as info:
        _convert(official, build_model(cfg), cfg)
    return str(info.value)


def test_missing_misshaped_and_unknown_tensors_are_refused_by_name():
    cfg = _cfg(gn=False)
    official = _official_state_dict(cfg, gn=False)

    without = dict(official)
    del without["backbone.body.layer3.5.bn2.running_var"]
    assert "1 missing from the checkpoint:\n  backbone.body.layer3.5.bn2.running_var" in _refusal(
        without, cfg
    )

    misshaped = dict(official)
    misshaped["mask.predictor.mask_fcn_logits.weight"] = misshaped[
        "mask.predictor.mask_fcn_logits.weight"
    ][1:]
    message = _refusal(misshaped, cfg)
    assert "1 shaped unlike the model's" in message
    assert "mask.predictor.mask_fcn_logits.weight: (80, 16, 1, 1)" in message

    unknown = dict(official)
    unknown["rpn.head.centerness.weight"] = torch.zeros(1)
    message = _refusal(unknown, cfg)
    assert "1 in the checkpoint but not in the model:\n  rpn.head.centerness.weight" in message


def test_gn_fpn_bias_needs_the_switch_and_anchors_must_match_the_config():
    cfg = _cfg(gn=True)
    official = _official_state_dict(cfg, gn=True)
    cfg.MODEL.RETINAMASK.FPN_NORM_CONV_BIAS = False
    message = _refusal(official, cfg)
    assert "6 in the checkpoint but not in the model" in message
    assert "backbone.fpn.fpn_inner2.0.bias" in message and "FPN_NORM_CONV_BIAS" in message

    cfg = _cfg(gn=False)
    official = _official_state_dict(cfg, gn=False)
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 3.0]]
    message = _refusal(official, cfg)
    assert "5 anchors unlike the config's" in message
    assert "rpn.anchor_generator.cell_anchors.0: stride 8" in message

"""detectron2's RetinaNet arguments from a config, with GN in the head towers on every version."""

from typing import Any

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm(32, channels) like get_norm("GN"); the 1-channel case only serves v0.6's probe.
    return nn.GroupNorm(min(32, channels), channels)


def build_retinanet_head(cfg: CfgNode, input_shapes: list[ShapeSpec]) -> RetinaNetHead:
    """detectron2's RetinaNetHead from ``cfg``, with ``MODEL.RETINANET.NORM: "GN"`` supported.

    detectron2 v0.6 (and the sdist of it that this project can install) probes the norm with
    ``get_norm(norm, 1)``, which raises for "GN" (32 groups cannot split 1 channel); official
    main probes with 32 channels and needs no help. Passing GN as a callable that builds the same
    ``GroupNorm(32, C)`` layers sidesteps the probe; the parameters and their names are those of
    detectron2's GN head, so checkpoints stay interchangeable.
    """
    if cfg.MODEL.RETINANET.NORM == "GN":
        return RetinaNetHead(cfg, input_shapes, norm=_group_norm)
    return RetinaNetHead(cfg, input_shapes)


def retinanet_arguments(cfg: CfgNode) -> dict[str, Any]:
    """``RetinaNet.from_config(cfg)``, with the head built by :func:`build_retinanet_head`.

    The one place that works around v0.6's GN probe, for RetinaMask and for the plain RetinaNet
    the benchmarks train beside it.
    """
    without_head_norm = cfg.clone()
    without_head_norm.defrost()
    without_head_norm.MODEL.RETINANET.NORM = ""
    arguments = RetinaNet.from_config(without_head_norm)
    shapes = arguments["backbone"].output_shape()
    arguments["head"] = build_retinanet_head(
        cfg, [shapes[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
    )
    return arguments

"""Building detectron2's RetinaNetHead so that GN works on detectron2 v0.6 too."""

from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm(32, channels) like get_norm("GN"); the 1-channel case only serves v0.6's probe.
    return nn.GroupNorm(min(32, channels), channels)


def build_retinanet_head(cfg, input_shapes: list[ShapeSpec]) -> RetinaNetHead:
    """detectron2's RetinaNetHead from ``cfg``, with ``MODEL.RETINANET.NORM: "GN"`` supported.

    detectron2 v0.6 probes the norm with ``get_norm(norm, 1)``, which raises for "GN" (32 groups
    cannot split 1 channel; upstream now probes 32). Passing GN as a callable that builds the
    same ``GroupNorm(32, C)`` layers sidesteps the probe; the parameters and their names are
    those of detectron2's GN head, so checkpoints stay interchangeable.
    """
    if cfg.MODEL.RETINANET.NORM == "GN":
        return RetinaNetHead(cfg, input_shapes, norm=_group_norm)
    return RetinaNetHead(cfg, input_shapes)

"""A Mask R-CNN mask head with a second 2x upsampling: 56 x 56 masks from 14 x 14 RoI features.

Why: a 28 x 28 mask of a long thin box has cells wider than a 2-4 px object (a 200 x 20 px box
gives 7 x 0.7 px cells); doubling the output side halves that. Everything else (loss, targets,
inference, pasting) is detectron2's and reads the mask side from the logits, so the loss targets
are cropped at 56 and the paste takes 56 x 56 masks without further change.
"""

import fvcore.nn.weight_init as weight_init
from detectron2.config import configurable
from detectron2.layers import ConvTranspose2d, ShapeSpec
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
)
from torch import nn


@ROI_MASK_HEAD_REGISTRY.register()
class MaskRCNNConvUpsample2xHead(MaskRCNNConvUpsampleHead):
    """detectron2's ``MaskRCNNConvUpsampleHead`` plus one deconv 2x2/2 + ReLU before the
    predictor (``ROI_MASK_HEAD.NAME: "MaskRCNNConvUpsample2xHead"``)."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, **kwargs):
        super().__init__(input_shape, **kwargs)
        channels = kwargs["conv_dims"][-1]
        predictor = self._modules.pop("predictor")  # re-added below: it must stay last
        self.deconv2 = ConvTranspose2d(channels, channels, kernel_size=2, stride=2, padding=0)
        self.add_module("deconv2_relu", nn.ReLU())
        self.predictor = predictor
        weight_init.c2_msra_fill(self.deconv2)

"""Feature pooling over oriented frames with ``grid_sample``, the rotated counterpart of
detectron2's ``ROIPooler``.

Why not detectron2's ``ROIAlignRotated``: it exists only in the compiled ``detectron2._C``,
which this project never depends on. ``grid_sample`` is in torch on every device, has a
backward for the features (so the mask loss reaches the backbone) and exports to TorchScript
and ONNX (GridSample, opset 16).
"""

import torch
import torch.nn.functional as F
from detectron2.layers.wrappers import shapes_to_tensor
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes
from torch import Tensor, nn

from .oriented_rois import frame_grid


class OrientedPooler(nn.Module):
    """Pools ``output_size`` x ``output_size`` features over each frame from one FPN level.

    The level is detectron2's rule (``assign_boxes_to_levels``) applied to the frame's own
    area, w x h: a thin tilted object goes to the fine level its width needs, not to the
    coarse one its large axis-aligned box would pick. Each output cell averages
    ``sampling_ratio`` x ``sampling_ratio`` bilinear samples, as aligned RoIAlign (ROIAlignV2)
    does with a fixed sampling ratio: image point x is read at feature coordinate
    x * scale - 0.5 (pixel centres at integers).
    """

    def __init__(
        self,
        output_size: int,
        scales: list[float],
        sampling_ratio: int,
        canonical_box_size: int,
        canonical_level: int,
    ):
        """
        Args:
            output_size: side of the pooled grid.
            scales: 1 / stride of each feature map, finest first, consecutive levels.
            sampling_ratio: samples per cell and axis (0, detectron2's "adaptive", means 2).
            canonical_box_size, canonical_level: detectron2's level rule.
        """
        super().__init__()
        self.output_size = output_size
        self.scales = list(scales)
        self.sampling_ratio = sampling_ratio if sampling_ratio > 0 else 2
        min_level = -torch.log2(torch.tensor(self.scales[0])).item()
        self.min_level = int(round(min_level))
        self.max_level = self.min_level + len(self.scales) - 1
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, features: list[Tensor], frames: list[Tensor]) -> Tensor:
        """(R, C, S, S) features of all images' frames, in order.

        Args:
            features: (N, C, Hl, Wl) maps, one per level of ``scales``.
            frames: per image, (Ri, 5) frames in image pixels.
        """
        side = self.output_size * self.sampling_ratio
        all_frames = torch.cat(frames)
        sizes = all_frames[:, 2:4]
        levels = assign_boxes_to_levels(
            [Boxes(torch.cat([-sizes / 2, sizes / 2], dim=1))],
            self.min_level,
            self.max_level,
            self.canonical_box_size,
            self.canonical_level,
        )
        # Sizes from .shape, not len(): a trace keeps them symbolic.
        images = torch.cat(
            [torch.zeros_like(f[:, 0], dtype=torch.int64) + i for i, f in enumerate(frames)]
        )
        channels = features[0].shape[1]
        output = features[0].new_zeros(
            (all_frames.shape[0], channels, self.output_size, self.output_size)
        )
        points = frame_grid(all_frames, side)  # (R, side, side, 2) image pixels
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            # shapes_to_tensor: the map's size stays symbolic in a trace.
            size = shapes_to_tensor([feature.shape[-1], feature.shape[-2]], points.device)
            normalise = 2.0 * scale / size.to(points.dtype)
            for image in range(len(frames)):
                (index,) = torch.nonzero((levels == level) & (images == image), as_tuple=True)
                # All of the image's frames at this level in one call: a grid of R x side rows.
                grid = (points[index] * normalise - 1).reshape(1, -1, side, 2)
                sampled = F.grid_sample(
                    feature[image : image + 1], grid.to(feature.dtype), align_corners=False
                )
                sampled = sampled.reshape(channels, -1, side, side).transpose(0, 1)
                output.index_put_((index,), F.avg_pool2d(sampled, self.sampling_ratio))
        return output

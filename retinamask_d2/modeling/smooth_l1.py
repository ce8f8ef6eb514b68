"""Self-adjusting smooth L1 loss (RetinaMask paper, section 3.3)."""

import torch
import torch.distributed as dist
from torch import Tensor, nn


class SelfAdjustingSmoothL1Loss(nn.Module):
    """Smooth L1 whose transition point beta follows the running statistics of the errors.

    For each of the ``num_features`` coordinates (4 box deltas), the running mean and variance of
    ``|prediction - target|`` over the regressed (positive) elements are updated with
    ``momentum`` (weight of the old value) at every training call, *before* the loss is computed
    with ``beta = clamp(mean - var, beta_min, beta_max)``, as in the official code. The variance
    is the unbiased one; a call with fewer than two elements leaves the statistics as they are.

    Unlike the official code, the batch statistics are summed over all processes when
    torch.distributed is initialised, so every process uses the same beta (that of the global
    batch). The statistics are buffers: they are saved in and restored from checkpoints.
    """

    def __init__(
        self,
        num_features: int = 4,
        *,
        momentum: float = 0.9,
        beta_max: float = 0.11,
        beta_min: float = 1e-3,
    ):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SELF_ADJUSTING_SMOOTH_L1.MOMENTUM must be in [0, 1), got {momentum}")
        if not 0.0 < beta_min <= beta_max:
            raise ValueError(
                "SELF_ADJUSTING_SMOOTH_L1 needs 0 < BETA_MIN <= BETA_MAX, "
                f"got BETA_MIN={beta_min}, BETA_MAX={beta_max}"
            )
        self.momentum = momentum
        self.beta_max = beta_max
        self.beta_min = beta_min
        self.register_buffer("running_mean", torch.full((num_features,), float(beta_max)))
        self.register_buffer("running_var", torch.zeros(num_features))

    @property
    def beta(self) -> Tensor:
        """The current per-coordinate transition point."""
        return (self.running_mean - self.running_var).clamp(min=self.beta_min, max=self.beta_max)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Sum of the losses of ``(M, num_features)`` predictions against their targets."""
        error = (pred - target).abs()
        if self.training:
            self._update_statistics(error.detach())
        beta = self.beta.to(error.dtype)
        loss = torch.where(error < beta, 0.5 * error * error / beta, error - 0.5 * beta)
        return loss.sum()

    @torch.no_grad()
    def _update_statistics(self, error: Tensor) -> None:
        # count, sum and sum of squares per coordinate, in float64 so that the variance from
        # sums stays exact enough; summed over processes to get the global batch's statistics.
        error = error.double()
        count = error.new_full((error.shape[1],), float(len(error)))
        moments = torch.stack([count, error.sum(dim=0), (error * error).sum(dim=0)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(moments)
        count, total, total_sq = moments
        if count[0] < 2:
            return
        mean = total / count
        var = (total_sq - count * mean * mean).clamp(min=0) / (count - 1)
        m = self.momentum
        self.running_mean.mul_(m).add_((1 - m) * mean.to(self.running_mean.dtype))
        self.running_var.mul_(m).add_((1 - m) * var.to(self.running_var.dtype))

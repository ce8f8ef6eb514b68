"""Self-adjusting smooth L1: statistics, beta and loss against hand computations."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retinamask_d2.modeling import SelfAdjustingSmoothL1Loss

# |prediction - target| of 3 positive anchors x 4 box coordinates.
ERRORS = torch.tensor(
    [
        [0.05, 0.10, 0.30, 0.02],
        [0.15, 0.10, 0.10, 0.04],
        [0.10, 0.40, 0.20, 0.06],
    ],
    dtype=torch.float64,
)
# By hand, per column: mean = (0.10, 0.20, 0.20, 0.04); unbiased variance =
# (0.005/2, 0.06/2, 0.02/2, 0.0008/2) = (0.0025, 0.03, 0.01, 0.0004).
# After one update from (mean 0.11, var 0) with momentum 0.9:
RUNNING_MEAN_1 = [0.109, 0.119, 0.119, 0.103]  # 0.099 + 0.1 * mean
RUNNING_VAR_1 = [0.00025, 0.003, 0.001, 0.00004]  # 0.1 * var
# beta = clamp(mean - var, 1e-3, 0.11):
BETA_1 = [0.10875, 0.11, 0.11, 0.10296]


def _smooth_l1_by_hand(errors: torch.Tensor, betas: list[float]) -> float:
    total = 0.0
    for row in errors.tolist():
        for e, b in zip(row, betas):
            total += 0.5 * e * e / b if e < b else e - 0.5 * b
    return total


def _loss() -> SelfAdjustingSmoothL1Loss:
    return SelfAdjustingSmoothL1Loss(4, momentum=0.9, beta_max=0.11, beta_min=1e-3).double()


def test_statistics_and_loss_match_hand_computation():
    loss_fn = _loss().train()
    assert torch.allclose(loss_fn.beta, torch.full((4,), 0.11, dtype=torch.float64))
    target = torch.randn(3, 4, dtype=torch.float64)
    signs = torch.tensor([[1.0, -1, 1, -1], [-1, 1, 1, 1], [1, 1, -1, -1]], dtype=torch.float64)
    pred = target + signs * ERRORS  # the loss sees |pred - target| = ERRORS

    loss = loss_fn(pred, target)

    # The statistics are updated before the loss is computed (as in the official code).
    torch.testing.assert_close(loss_fn.running_mean, torch.tensor(RUNNING_MEAN_1).double())
    torch.testing.assert_close(loss_fn.running_var, torch.tensor(RUNNING_VAR_1).double())
    torch.testing.assert_close(loss_fn.beta, torch.tensor(BETA_1).double())
    assert abs(loss.item() - _smooth_l1_by_hand(ERRORS, BETA_1)) < 1e-8


def test_second_update_continues_from_the_first():
    loss_fn = _loss().train()
    loss_fn(ERRORS, torch.zeros_like(ERRORS))
    # Errors of 0.05 and 0.15 in every coordinate: mean 0.1, unbiased variance 0.005.
    errors = torch.tensor([[0.05] * 4, [0.15] * 4], dtype=torch.float64)
    loss_fn(errors, torch.zeros_like(errors))
    expected_mean = [0.9 * m + 0.1 * 0.1 for m in RUNNING_MEAN_1]
    expected_var = [0.9 * v + 0.1 * 0.005 for v in RUNNING_VAR_1]
    torch.testing.assert_close(loss_fn.running_mean, torch.tensor(expected_mean).double())
    torch.testing.assert_close(loss_fn.running_var, torch.tensor(expected_var).double())
    # e.g. coordinate 0: 0.1081 - 0.000725 = 0.107375, inside [1e-3, 0.11].
    assert abs(loss_fn.beta[0].item() - 0.107375) < 1e-8


def test_beta_min_clamp_when_variance_dominates():
    loss_fn = _loss().train()
    errors = torch.tensor([[0.0] * 4, [10.0] * 4], dtype=torch.float64)  # mean 5, var 50
    loss_fn(errors, torch.zeros_like(errors))
    # mean 0.099 + 0.5 = 0.599, var 5.0: mean - var < 0, so beta = 1e-3.
    torch.testing.assert_close(loss_fn.beta, torch.full((4,), 1e-3, dtype=torch.float64))


def test_no_update_in_eval_or_with_fewer_than_two_elements():
    loss_fn = _loss().eval()
    initial_mean = loss_fn.running_mean.clone()
    loss_fn(ERRORS, torch.zeros_like(ERRORS))
    assert torch.equal(loss_fn.running_mean, initial_mean)
    loss_fn.train()
    one = ERRORS[:1]
    loss = loss_fn(one, torch.zeros_like(one))
    assert torch.equal(loss_fn.running_mean, initial_mean)
    assert torch.equal(loss_fn.running_var, torch.zeros(4, dtype=torch.float64))
    assert abs(loss.item() - _smooth_l1_by_hand(one, [0.11] * 4)) < 1e-8
    none = ERRORS[:0]
    assert loss_fn(none, torch.zeros_like(none)).item() == 0.0
    assert torch.equal(loss_fn.running_mean, initial_mean)


def test_gradient_is_that_of_smooth_l1():
    loss_fn = _loss().train()
    pred = ERRORS.clone().requires_grad_(True)
    loss_fn(pred, torch.zeros_like(pred)).backward()
    beta = torch.tensor(BETA_1).double()
    expected = torch.where(ERRORS < beta, ERRORS / beta, torch.ones_like(ERRORS))
    torch.testing.assert_close(pred.grad, expected)


def _distributed_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        loss_fn = _loss().train()
        rows = ERRORS[:1] if rank == 0 else ERRORS[1:]  # 1 and 2 elements: only the sum has 3
        loss_fn(rows, torch.zeros_like(rows))
        torch.save(
            {"mean": loss_fn.running_mean, "var": loss_fn.running_var}, f"{out_dir}/{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_statistics_are_reduced_across_processes(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        stats = torch.load(tmp_path / f"{rank}.pt")
        # Both processes hold the statistics of the 3 rows together.
        torch.testing.assert_close(stats["mean"], torch.tensor(RUNNING_MEAN_1).double())
        torch.testing.assert_close(stats["var"], torch.tensor(RUNNING_VAR_1).double())


def test_invalid_settings_are_rejected_with_the_option_named():
    with pytest.raises(ValueError, match="MOMENTUM"):
        SelfAdjustingSmoothL1Loss(momentum=1.0)
    with pytest.raises(ValueError, match="BETA_MIN"):
        SelfAdjustingSmoothL1Loss(beta_min=0.2, beta_max=0.11)

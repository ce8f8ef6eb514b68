"""maskpool: the mask branch's RoI features averaged under the mask, against a hand computation."""

import torch

from retinamask_d2.modeling.mask_embeddings import maskpool_embeddings


def test_maskpool_is_the_mask_weighted_mean_of_the_roi_features():
    # One RoI, 2 channels on a 2 x 2 grid; the 4 x 4 mask covers the left half fully and the
    # top-right cell at half strength: cell weights [[1, 0.5], [1, 0]] after 2 x 2 averaging.
    pooled = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 0.0], [0.0, 4.0]]]])
    probs = torch.zeros(1, 1, 4, 4)
    probs[..., :, :2] = 1.0
    probs[..., :2, 2:] = 0.5
    weights = torch.tensor([[1.0, 0.5], [1.0, 0.0]])
    expected = (pooled[0] * weights).sum(dim=(1, 2)) / weights.sum()  # (1 + 1.5 + 5, 2) / 2.5
    assert torch.allclose(expected, torch.tensor([3.0, 0.8]))

    embedding = maskpool_embeddings(pooled, probs)

    assert torch.allclose(embedding[0], expected / expected.norm())


def test_maskpool_ignores_the_features_outside_the_mask_and_an_empty_mask_averages_all():
    pooled = torch.randn(2, 8, 14, 14)
    probs = torch.zeros(2, 1, 28, 28)
    probs[0, :, 10:14, :] = 1.0  # a horizontal strip: rows 5-6 of the 14 x 14 grid
    changed = pooled.clone()
    changed[0, :, :5] += 100.0  # outside the strip
    assert torch.allclose(
        maskpool_embeddings(pooled, probs)[0], maskpool_embeddings(changed, probs)[0]
    )
    plain = torch.nn.functional.normalize(pooled[1].mean(dim=(1, 2)), dim=0)
    assert torch.allclose(maskpool_embeddings(pooled, probs)[1], plain, atol=1e-6)

"""maskpool: the mask branch's RoI features averaged under the mask, against a hand computation."""

import torch

from retinamask_d2.modeling.mask_embeddings import maskpool_embeddings
from tests.common import build_tiny_model
from tests.export_common import CLASS_BIAS, detecting_cfg, random_image


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


def test_test_embeddings_returns_maskpool_of_each_masked_detection_and_zeros_for_the_rest():
    cfg = detecting_cfg()  # a tiny model with scores spread around the threshold
    cfg.MODEL.RETINAMASK.TEST_EMBEDDINGS = True
    cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = 3
    torch.manual_seed(0)
    model = build_tiny_model(cfg).eval()
    with torch.no_grad():
        model.head.cls_score.weight.mul_(10.0)
        model.head.cls_score.bias.fill_(CLASS_BIAS)
    image = random_image((96, 128), 0).permute(2, 0, 1).float()
    with torch.no_grad():
        instances = model([{"image": image}])[0]["instances"]
        # By hand: the mask branch's pooled features of the 3 masked detections, under their
        # M x M mask probabilities.
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        mask_features = [features[f] for f in model.mask_branch.in_features]
        detections = model.forward_inference(
            images,
            [features[f] for f in model.head_in_features],
            model.head([features[f] for f in model.head_in_features]),
        )[0]
        detections = model.clip_to_image(detections)[:3]
        pooled = model.mask_branch.pooler(mask_features, [detections.pred_boxes])
        probs = model.mask_branch.predict(mask_features, [detections])[0].pred_masks

    assert len(instances) > 3 and instances.pred_embeddings.shape == (
        len(instances),
        pooled.shape[1],
    )
    expected = maskpool_embeddings(pooled, probs)
    assert torch.allclose(instances.pred_embeddings[:3], expected, atol=1e-5)
    assert not instances.pred_embeddings[3:].any()

    cfg.MODEL.RETINAMASK.TEST_EMBEDDINGS = False
    plain = build_tiny_model(cfg).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        without = plain([{"image": image}])[0]["instances"]
    assert not without.has("pred_embeddings")
    assert torch.equal(without.pred_boxes.tensor, instances.pred_boxes.tensor)

"""The object-comparison benchmark's measures: retrieval metrics by hand, mask errors, scenes."""

import numpy as np
import pytest

from benchmarks.objects import compare_crops, identity_scenes


def test_retrieval_metrics_match_a_hand_computed_ranking():
    # Identities 0, 0, 1, 1 at 0, 50, 20, 30 degrees. Query 0 ranks 2, 3, then its match 1:
    # miss at 1, hit within 5, AP 1/3; query 1 ranks 3, 2, then 0: AP 1/3; queries 2 and 3
    # find each other first: AP 1.
    angles = np.radians([0.0, 50.0, 20.0, 30.0])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    scores = compare_crops.retrieval(vectors, np.array([0, 0, 1, 1]))
    assert scores["r1"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert scores["r5"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert scores["ap"] == pytest.approx([1 / 3, 1 / 3, 1.0, 1.0])


def test_changed_mask_erodes_and_dilates_by_whole_pixels():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 8:12] = True  # 10 x 4
    assert compare_crops.changed_mask(mask, 1).sum() == 12 * 6
    assert compare_crops.changed_mask(mask, -1).sum() == 8 * 2
    assert np.array_equal(compare_crops.changed_mask(mask, -3), mask)  # would vanish: kept


def test_paired_difference_and_its_permutation_p():
    rng = np.random.default_rng(0)
    same = compare_crops.paired(np.ones(40), np.ones(40), rng)
    assert same["difference"][0] == 0.0 and same["p"] == 1.0
    better = compare_crops.paired(np.zeros(40), np.ones(40), rng)
    assert better["difference"] == [1.0, 1.0, 1.0] and better["p"] < 0.001


def test_scenes_show_each_identity_at_other_angles_with_its_mask_and_box():
    identities = identity_scenes.make_identities(3, 1, seed=0)
    views = identity_scenes.make_views(identities, 3, seed=1)
    assert [v.identity for v in views] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for v in views:
        x0, y0, x1, y1 = v.box
        rows, cols = np.flatnonzero(v.mask.any(1)), np.flatnonzero(v.mask.any(0))
        assert (x0, y0, x1, y1) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        assert 0 <= v.tilt <= 45
    thin = [v for v in views if identities[v.identity].kind == "thin"]
    assert min(v.elongation for v in thin) > 5
    assert len({round(v.tilt) for v in views[:3]}) == 3  # the same object at other angles

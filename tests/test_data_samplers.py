"""The resumable sampler and loader: batches and augmentations depend on (seed, iteration) only."""

import itertools
import random

import numpy as np
import pytest
import torch
from detectron2.data.samplers import TrainingSampler

from retinamask_d2.data.samplers import IterationBatchSampler, sample_seed
from retinamask_d2.data.train_loader import ResumableTrainLoader, SeededMapDataset, seeded_rngs


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_single_process_stream_is_detectron2_training_sampler_order():
    sampler = IterationBatchSampler([0] * 10, total_batch_size=4, seed=7)
    expected = list(itertools.islice(iter(TrainingSampler(10, shuffle=True, seed=7)), 24))
    batches = _take(sampler, 6)
    assert [i for batch in batches for i, _ in batch] == expected
    seeds = [s for batch in batches for _, s in batch]
    assert len(set(seeds)) == len(seeds)
    assert batches[2][1][1] == sample_seed(7, 2, 1)


def test_ranks_split_the_global_batch_whatever_the_number_of_processes():
    groups = [0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1]  # landscape 0 / portrait 1
    single = _take(IterationBatchSampler(groups, 4, seed=3), 12)
    ranks = [_take(IterationBatchSampler(groups, 4, 3, rank=r, world_size=2), 12) for r in (0, 1)]
    for it in range(12):
        assert ranks[0][it] + ranks[1][it] == single[it]  # same images, same sample seeds
        assert len({groups[i] for i, _ in single[it]}) == 1  # a batch never mixes aspect groups
    # Every epoch is a permutation: over 4 epochs each image is drawn 4 times (minus the
    # images still waiting in a half-full bucket).
    counts = np.bincount([i for b in single for i, _ in b], minlength=len(groups))
    assert counts.sum() == 48 and counts.max() - counts.min() <= 2


def test_starting_at_iteration_k_gives_the_tail_of_the_run_from_zero():
    groups = [0, 1] * 7 + [0]
    full = _take(IterationBatchSampler(groups, 4, seed=11, rank=1, world_size=2), 20)
    resumed = IterationBatchSampler(groups, 4, seed=11, rank=1, world_size=2)
    resumed.start_iter = 13
    assert _take(resumed, 7) == full[13:]
    other_seed = _take(IterationBatchSampler(groups, 4, seed=12, rank=1, world_size=2), 20)
    assert other_seed != full


def test_batch_size_must_divide_among_processes():
    with pytest.raises(ValueError, match=r"IMS_PER_BATCH \(3\) must be a positive multiple of .*2"):
        IterationBatchSampler([0] * 8, 3, seed=0, world_size=2)


def _random_mapper(record: dict) -> dict:
    """Stands for an augmenting mapper: draws from all three global RNGs."""
    return {
        "index": record["index"],
        "draws": (random.random(), float(np.random.rand()), float(torch.rand(1))),
    }


def test_mapper_rngs_are_seeded_per_sample_and_restored_after():
    dataset = SeededMapDataset([{"index": i} for i in range(5)], _random_mapper)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b, c = dataset[(2, 99)], dataset[(2, 99)], dataset[(2, 100)]
    assert a == b and a["draws"] != c["draws"] and a["index"] == 2
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_rngs(99):
        assert _random_mapper({"index": 2}) == a


def test_mapper_returning_none_falls_back_to_another_image_deterministically():
    dataset = SeededMapDataset(
        [{"index": i} for i in range(6)], lambda r: None if r["index"] == 3 else r
    )
    first = dataset[(3, 5)]
    assert first["index"] != 3 and dataset[(3, 5)] == first
    always_none = SeededMapDataset([{"index": 0}], lambda r: None)
    with pytest.raises(RuntimeError, match="returned None 4 times"):
        always_none[(0, 1)]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_starts_where_told_when_iteration_begins(workers):
    dataset = SeededMapDataset([{"index": i} for i in range(7)], _random_mapper)
    loader = ResumableTrainLoader(dataset, IterationBatchSampler([0] * 7, 2, seed=5), workers)
    from_zero = list(itertools.islice(iter(loader), 6))
    stream = iter(loader)  # as SimpleTrainer does at construction, before a checkpoint is loaded
    loader.start_iter = 4
    assert list(itertools.islice(stream, 2)) == from_zero[4:]

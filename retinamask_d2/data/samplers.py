"""Training batches as a pure function of (seed, iteration): what makes resumed runs exact.

detectron2's ``TrainingSampler`` + ``AspectRatioGroupedDataset`` keep their position in the
sample stream, the half-filled aspect-ratio buckets and the data-loader workers' RNG in memory,
and its checkpointer saves none of them: a run resumed from iteration k starts the stream over and
trains on other images, with other augmentations, than the uninterrupted run did. Here batch k
is computed from the seed and k alone, and so is the seed of each sample's augmentation.

The global stream is ``TrainingSampler``'s for one process (a new ``randperm`` every epoch from a
generator seeded once), grouped into batches of the *total* batch size by aspect ratio as
``AspectRatioGroupedDataset`` does (landscape and portrait buckets, a batch leaves when its bucket
is full). Each of W ranks takes its slice of every batch, so the images of a step are the same
for any W: a 2-process run sees what a 1-process run with the same total batch sees. Resuming at
iteration k replays the grouping of indices (no image is read; about a second per million images
drawn) up to batch k.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(*words: int) -> int:
    """A 32-bit seed mixed from ``words`` by numpy's ``SeedSequence``."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def sample_seed(seed: int, iteration: int, position: int) -> int:
    """The RNG seed of the sample at ``position`` of the global batch of ``iteration``."""
    return derive_seed(seed, iteration, position)


class IterationBatchSampler(Sampler):
    """Yields, for iterations ``start_iter, start_iter + 1, ...``, this rank's batch as a list of
    ``(dataset index, sample seed)``.

    Args:
        groups: a group id per dataset index (e.g. 0 landscape, 1 portrait); a batch holds one
            group only. All zeros: plain batches in stream order.
        total_batch_size: images per iteration over all ranks; divisible by ``world_size``.
        seed: the seed of the stream and of the sample seeds.
        shuffle: draw a new permutation every epoch (else indices in order, repeated).
    """

    def __init__(
        self,
        groups: Sequence[int],
        total_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if len(groups) == 0:
            raise ValueError("IterationBatchSampler: the training set is empty")
        if total_batch_size <= 0 or total_batch_size % world_size != 0:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the "
                f"number of processes ({world_size})"
            )
        self.groups = list(groups)
        self.total_batch_size = total_batch_size
        self.batch_size = total_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.shuffle = shuffle
        self.start_iter = 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        first = self.rank * self.batch_size
        batches = itertools.islice(self.global_batches(), self.start_iter, None)
        for iteration, batch in enumerate(batches, start=self.start_iter):
            yield [
                (index, sample_seed(self.seed, iteration, first + j))
                for j, index in enumerate(batch[first : first + self.batch_size])
            ]

    def global_batches(self) -> Iterator[list[int]]:
        """The batches of all ranks together, one per iteration, from iteration 0."""
        buckets: dict[int, list[int]] = {}
        for index in self._indices():
            bucket = buckets.setdefault(self.groups[index], [])
            bucket.append(index)
            if len(bucket) == self.total_batch_size:
                yield bucket[:]
                bucket.clear()

    def _indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        size = len(self.groups)
        while True:
            if self.shuffle:
                yield from torch.randperm(size, generator=generator).tolist()
            else:
                yield from range(size)

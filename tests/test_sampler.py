"""GroupBatchSampler: every minimal-pair group in one global batch with one caption per video, exact batch sizes, each
row at most once, a plan fixed by (seed, epoch), and accelerate's sharding, skipping and length on top of it."""

from collections import Counter

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler

from s2ca_hf.data import GroupBatchSampler


def corpus(num_groups: int = 40, captions: int = 2, singles: int = 30, seed: int = 0) -> tuple[list[int], list[int]]:
    """(group, video) per row: groups of 2 to 4 clips, clips of `captions` captions each, and `singles` clips in no
    group (-1), rows in the order a corpus lists them (a clip's captions together)."""
    rng = np.random.default_rng(seed)
    groups, videos = [], []
    sizes = [int(n) for n in rng.integers(2, 5, num_groups)] + [1] * singles
    for group, size in enumerate(sizes):
        for _ in range(size):
            video = len(set(videos))
            groups += [group if group < num_groups else -1] * captions
            videos += [video] * captions
    return groups, videos


def same_group_pairs(batches, groups) -> int:
    """Pairs of rows of one group in one batch: the one-attribute neighbours a batch holds."""
    return sum(
        count * (count - 1) // 2
        for batch in batches
        for g, count in Counter(groups[r] for r in batch).items()
        if g >= 0
    )


@pytest.mark.parametrize("singles", [30, 0])
def test_every_group_is_in_one_batch_with_one_caption_per_video(singles):
    # Without single rows to fill the gaps, only exact filling (subset sums) keeps the groups whole.
    groups, videos = corpus(singles=singles)
    batches = GroupBatchSampler(groups, videos, batch_size=16, seed=0).global_batches()
    clips = Counter(group for group, _ in set(zip(groups, videos)) if group >= 0)
    for batch in batches:
        assert len({videos[r] for r in batch}) == len(batch)  # a video at most once per batch
        for group, count in Counter(groups[r] for r in batch).items():
            assert group < 0 or count == clips[group]  # all of the group's clips, each with one caption
    assert sum(map(len, batches)) == len(groups) // 16 * 16


def test_batches_hold_far_more_one_attribute_neighbours_than_a_plain_shuffle():
    groups, videos = corpus()
    grouped = GroupBatchSampler(groups, videos, batch_size=16, seed=0).global_batches()
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(0)).tolist()
    shuffled = [order[i : i + 16] for i in range(0, len(order) - 15, 16)]
    assert same_group_pairs(grouped, groups) > 5 * same_group_pairs(shuffled, groups)


@pytest.mark.parametrize("batch_size", [4, 7, 16])
def test_batches_are_exactly_full_and_no_row_comes_twice(batch_size):
    groups, videos = corpus(captions=3)
    sampler = GroupBatchSampler(groups, videos, batch_size=batch_size, num_processes=2, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        slices = list(sampler)
        assert len(slices) == len(sampler) == len(groups) // (2 * batch_size) * 2
        assert all(len(rows) == batch_size for rows in slices)
        rows = [row for rows in slices for row in rows]
        assert len(rows) == len(set(rows)) and len(groups) - len(rows) < 2 * batch_size
        assert all(isinstance(row, int) for row in rows)


def test_a_group_larger_than_a_batch_fills_whole_batches():
    groups, videos = [0] * 10 + [-1] * 6, list(range(16))
    batches = GroupBatchSampler(groups, videos, batch_size=4, seed=0).global_batches()
    assert len(batches) == 4 and sorted(Counter(groups[r] for r in b).get(0, 0) for b in batches) == [0, 2, 4, 4]


def test_a_video_appears_twice_in_a_batch_only_when_nothing_else_is_left():
    # Clips of 3 or 4 captions: every batch can hold as many different clips as rows, and does, the last ones of
    # an epoch included (where the rows left are few clips' captions, they trade places with other batches' rows).
    for clips, captions, batch_size in [(4, 3, 4), (12, 3, 8), (60, 4, 16)]:
        groups, videos = [-1] * clips * captions, [i // captions for i in range(clips * captions)]
        for seed in range(5):
            batches = GroupBatchSampler(groups, videos, batch_size=batch_size, seed=seed).global_batches()
            assert len(batches) == clips * captions // batch_size
            assert all(len({videos[r] for r in b}) == batch_size for b in batches)
    # One clip with 6 captions and 2 others: the batches of 4 cannot avoid repeating it, and are still full.
    groups, videos = [-1] * 8, [0, 0, 0, 0, 0, 0, 1, 2]
    batches = GroupBatchSampler(groups, videos, batch_size=4, seed=0).global_batches()
    assert sorted(r for b in batches for r in b) == list(range(8))


def test_the_plan_is_fixed_by_seed_and_epoch():
    groups, videos = corpus()
    a, b = (GroupBatchSampler(groups, videos, batch_size=8, seed=5) for _ in range(2))
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) == list(a)  # iterating again replays the epoch
    b.set_epoch(3)
    assert list(a) != list(b)
    other_seed = GroupBatchSampler(groups, videos, batch_size=8, seed=6)
    other_seed.set_epoch(2)
    assert list(a) != list(other_seed)


def test_accelerates_shards_make_up_the_global_batches_and_skipping_continues_the_epoch():
    # accelerate (split_batches=False) gives process k every k-th batch of the sampler: the slices of one step must be
    # one global batch, so that a group stays inside it.
    groups, videos = corpus()
    sampler = GroupBatchSampler(groups, videos, batch_size=8, num_processes=2, seed=1)
    sampler.set_epoch(4)
    shards = [BatchSamplerShard(sampler, num_processes=2, process_index=k) for k in range(2)]
    steps = list(zip(*shards))
    assert len(steps) == len(shards[0]) == len(shards[1]) == len(sampler) // 2
    assert [first + second for first, second in steps] == sampler.global_batches()
    # Resuming at step 3 of the epoch: accelerate's skip over the shard continues exactly.
    skipped = list(SkipBatchSampler(shards[0], skip_batches=3))
    assert skipped == [first for first, _ in steps[3:]]


def test_prepare_and_skip_first_batches_of_a_data_loader_over_it():
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    groups, videos = corpus()
    sampler = GroupBatchSampler(groups, videos, batch_size=8, seed=2)
    loader = DataLoader(list(range(len(groups))), batch_sampler=sampler, collate_fn=list)
    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(loader)
    assert len(prepared) == len(sampler)

    def start_epoch(epoch: int) -> None:  # as the training loop does
        prepared.set_epoch(epoch)
        sampler.set_epoch(epoch)

    start_epoch(1)
    epoch = list(prepared)
    assert epoch == list(sampler) and len(epoch) == len(prepared)
    start_epoch(1)
    assert list(accelerator.skip_first_batches(prepared, 5)) == epoch[5:]
    start_epoch(2)
    assert list(prepared) != epoch

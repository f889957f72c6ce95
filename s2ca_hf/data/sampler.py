"""`GroupBatchSampler`: training batches that hold each minimal-pair group together, so that its clips, which differ in
one attribute only (one object's colour, the motion, ...), are each other's negatives.

A contrastive loss only learns what its batch asks: with a plain shuffle, a clip almost never meets the clip that
differs from it in one colour, and nothing teaches the model to look at that colour. The sampler plans an epoch as
global batches, cut into one slice per process in the order accelerate hands them out, so that it works under
`accelerator.prepare`, `skip_first_batches` and `len()` like a plain `BatchSampler` with `drop_last=True`.
"""

from collections import deque
from collections.abc import Sequence
from itertools import islice

import numpy as np
from torch.utils.data import Sampler


EXACT_WINDOW = 1024  # how many waiting units an exact completion looks through


class GroupBatchSampler(Sampler[list[int]]):
    """Batches of row indices in which every minimal-pair group stays together, one caption per video.

    An epoch is planned from (`seed`, epoch) alone (`set_epoch`), so that a resumed run and every process plan the
    same one:

    1. Units. A group's clips, one caption each, form a unit: its first unit holds one caption of every clip, the
       next one another caption of the clips that have more, and so on, the captions taken in a shuffled order. A
       video's several captions thus fall in different batches, and its clip meets its group in each. A row of group
       -1 is a unit of its own; a unit larger than a global batch is cut into global batches.
    2. Packing. Global batches are filled one after another from the units in shuffled order: whole units in turn
       while many rows are missing, then the earliest set of waiting units that fills the batch exactly (a subset sum
       over its last rows), never with a video the batch already holds; units passed over wait for the next batch.
       Filling exactly, rather than taking what fits, is what keeps groups whole when no unit is a single row.
    3. The rest. The rows of the batches that no set of whole units completes fill further batches in order, a row
       whose video the batch holds waiting for the next batch. When only such rows are left, each trades places with
       a row of group -1 in a full batch where neither video would be twice, or else comes in (two captions of one
       video, which the training loss does not count as negatives of each other). The fewer than a batch of rows
       left at the end sit the epoch out (`drop_last`: every process must gather as many features).
    4. The global batches are shuffled, and each is yielded as `num_processes` consecutive slices of `batch_size`
       rows. Accelerate's `BatchSamplerShard` (split_batches=False) gives process k the k-th of every
       `num_processes` batches, so that the processes' slices of one step make up one global batch.

    Every epoch has `len(groups) // (batch_size * num_processes)` global batches of exactly that many rows, no row
    twice. A group is cut only where step 3 has to, a fraction of a percent of the groups when they hold 2 to 4
    clips.

    Args:
        groups: each row's minimal-pair group (the corpus's `group` column), -1 for none.
        videos: each row's video (`video_index`): rows of one video are several captions of one clip.
        batch_size: rows per process and step (`per_device_train_batch_size`).
        num_processes: the processes that share a global batch.
        seed: the seed the epochs' plans are drawn from.
    """

    drop_last = True  # what accelerate's BatchSamplerShard reads: every yielded batch is full

    def __init__(
        self, groups: Sequence[int], videos: Sequence[int], batch_size: int, num_processes: int = 1, seed: int = 0
    ):
        if len(groups) != len(videos):
            raise ValueError(
                f"GroupBatchSampler needs one group and one video per row: {len(groups)} != {len(videos)}."
            )
        if batch_size < 1 or num_processes < 1:
            raise ValueError(f"batch_size and num_processes must be >= 1, got {batch_size} and {num_processes}.")
        super().__init__()
        self.groups = np.asarray(groups, dtype=np.int64)
        self.videos = np.asarray(videos, dtype=np.int64)
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.global_batch_size = batch_size * num_processes
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups) // self.global_batch_size * self.num_processes

    def __iter__(self):
        for batch in self.global_batches():
            for start in range(0, self.global_batch_size, self.batch_size):
                yield batch[start : start + self.batch_size]

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches, in the order they are trained on."""
        rng = np.random.default_rng([self.seed, self.epoch])
        batches, incomplete = self._pack(self._units(rng))
        batches += self._fill(incomplete, batches)
        return [batches[i] for i in rng.permutation(len(batches))]

    def _units(self, rng: np.random.Generator) -> list[list[int]]:
        size = self.global_batch_size
        units, clips_of_group = [], {}
        for row in rng.permutation(len(self.groups)).tolist():  # a shuffled order: which caption comes first
            group = int(self.groups[row])
            if group < 0:
                units.append([row])
            else:
                clips_of_group.setdefault(group, {}).setdefault(int(self.videos[row]), []).append(row)
        for clips in clips_of_group.values():
            for depth in range(max(len(captions) for captions in clips.values())):
                rows = [captions[depth] for captions in clips.values() if depth < len(captions)]
                units += [rows[start : start + size] for start in range(0, len(rows), size)]
        return [units[i] for i in rng.permutation(len(units))]

    def _pack(self, units: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
        """(the full global batches, the rows of each batch that no set of whole units could complete)."""
        size = self.global_batch_size
        largest = max(map(len, units), default=1)
        # The rows left to the subset sum: enough that whole units can make the count left whatever the first ones
        # were (sizes up to L make every count above L * L that they make at all), few enough to stay cheap.
        exact = min(size, max(2 * largest, largest * largest))
        waiting = deque((unit, {int(self.videos[row]) for row in unit}) for unit in units)
        full, incomplete = [], []
        while waiting:
            rows, held, passed = [], set(), []
            while waiting and (not rows or size - len(rows) > exact):
                unit, videos = waiting.popleft()
                if held.isdisjoint(videos):
                    rows += unit
                    held |= videos
                else:
                    passed.append((unit, videos))
            waiting.extendleft(reversed(passed))
            completion = self._complete(size - len(rows), waiting, held)
            for position in sorted(completion or [], reverse=True):
                rows += waiting[position][0]
                del waiting[position]
            (full if len(rows) == size else incomplete).append(rows)
        return full, incomplete

    @staticmethod
    def _complete(room: int, waiting: deque, held: set[int]) -> list[int] | None:
        """Positions in `waiting` of whole units that fill `room` rows exactly, the earliest such set in order, with
        no video in `held` nor twice; `None` when the first `EXACT_WINDOW` units have none."""
        if room == 0:
            return []
        reach, seen = {0: []}, set(held)  # rows -> positions of the units that make them
        for position, (unit, videos) in enumerate(islice(waiting, EXACT_WINDOW)):
            if len(unit) > room or not seen.isdisjoint(videos):
                continue
            seen |= videos
            for total, positions in list(reach.items()):
                if total + len(unit) <= room and total + len(unit) not in reach:
                    reach[total + len(unit)] = [*positions, position]
            if room in reach:
                return reach[room]
        return None

    def _fill(self, incomplete: list[list[int]], full: list[list[int]]) -> list[list[int]]:
        """Full global batches from the rows of the incomplete ones, in order, a video at most once when possible."""
        waiting = [row for rows in incomplete for row in rows]
        batches = []
        while len(waiting) >= self.global_batch_size:
            batch, videos, later = [], set(), []
            for row in waiting:
                video = int(self.videos[row])
                if len(batch) < self.global_batch_size and video not in videos:
                    batch.append(row)
                    videos.add(video)
                else:
                    later.append(row)
            # Only rows of videos the batch holds are left: each comes in, or, better, trades places with a row of
            # group -1 in a full batch that lacks its video and whose video this batch lacks.
            missing = self.global_batch_size - len(batch)
            for row in later[:missing]:
                batch.append(self._trade(row, videos, full))
                videos.add(int(self.videos[batch[-1]]))
            batches.append(batch)
            waiting = later[missing:]
        return batches

    def _trade(self, row: int, videos: set[int], full: list[list[int]]) -> int:
        """A row of group -1 from a full batch without `row`'s video and of a video not in `videos`, `row` taking its
        place; `row` itself when there is none."""
        video = int(self.videos[row])
        for other in full:
            held = {int(self.videos[r]) for r in other}
            if video in held:
                continue
            for position, candidate in enumerate(other):
                if self.groups[candidate] < 0 and int(self.videos[candidate]) not in videos:
                    other[position] = row
                    return candidate
        return row


__all__ = ["GroupBatchSampler"]

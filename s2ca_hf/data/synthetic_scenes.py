"""What each clip of the built-in concept-video corpus shows and says, before any pixel.

The vocabulary (colours, shapes, motions, backgrounds, and the wider world only the pretraining stills show), the
scene layout (1-4 objects anywhere in the frame, their trajectories never crossing), the captions (which name a
subset of the objects, like real captions do), the minimal-pair groups, the caption foils, the content-aware ground
truth of every evaluation query (`Query.satisfied_by`), what separates a wrong answer from the query
(`query_error`) and what an oracle blind to one attribute would score (`oracle_r1`). `synthetic.py` writes the corpus
from this plan; `synthetic_render.py` draws the frames.

Why it is built this way (each a property a retrieval benchmark for concept-level matching needs):
* A caption names what it names: a video is a correct answer when it shows everything the caption says, so one
  query can have several correct videos and the metrics count any of them (multi-positive evaluation).
* No two clips of an evaluation split show the same content: no query has an indistinguishable twin.
* Captions that name one object of several, binding pairs (two objects swap colour, shape or motion) and motion
  pairs (one object's motion reversed in time) are what single-vector matching gets wrong; each query records its
  type so that results can be read per type.
* Training clips come in minimal-pair groups too, and each caption may carry a foil (a direction reversed, two
  colours or motions swapped): the hard negatives a random batch never holds.
"""

from dataclasses import dataclass, replace
from itertools import permutations

import numpy as np


EVAL_SPLITS = ("val", "test", "compositional", "open_vocab")
GROUP_SIZE = 5  # a minimal-pair group: one clip and up to four one-attribute variants

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 70, 230),
    "yellow": (235, 220, 40),
    "purple": (150, 50, 200),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
    "cyan": (40, 210, 220),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
MOTIONS = ("left", "right", "up", "down", "grow", "shrink", "rotate", "blink", "still")
BACKGROUNDS = ("black", "grey", "striped", "checkered", "gradient")
# The wider world of the pretraining stills: colours and shapes that fine-tuning never shows. The open_vocab
# evaluation split uses them, to measure what fine-tuning keeps of the pretrained CLIP's knowledge.
PRETRAIN_COLOURS = {"pink": (250, 130, 200), "brown": (140, 85, 30), "lime": (170, 250, 90)}
PRETRAIN_SHAPES = ("star", "hexagon", "semicircle")
ALL_COLOURS = {**COLOURS, **PRETRAIN_COLOURS}
# Turning a circle or a ring shows nothing: those combinations do not exist.
ROTATION_SYMMETRIC = ("circle", "ring")
# Motions that are each other's time reversal: a model blind to frame order cannot tell them apart.
REVERSED = {"left": "right", "right": "left", "up": "down", "down": "up", "grow": "shrink", "shrink": "grow"}
QUERY_TYPES = ("all", "subset", "binding", "motion")

MOTION_PHRASES = {
    "left": ("slides to the left", "moves left", "drifts to the left", "travels leftward"),
    "right": ("slides to the right", "moves right", "drifts to the right", "travels rightward"),
    "up": ("rises", "moves up", "floats upward", "goes up"),
    "down": ("falls", "moves down", "sinks", "goes down"),
    "grow": ("grows", "gets bigger", "expands", "grows larger"),
    "shrink": ("shrinks", "gets smaller", "contracts", "becomes smaller"),
    "rotate": ("spins", "rotates", "turns around", "spins in place"),
    "blink": ("blinks", "flashes on and off", "flickers", "keeps blinking"),
    "still": ("stays still", "does not move", "sits still", "rests in place"),
}
BACKGROUND_PHRASES = {
    "black": ("on a black background", "against a black background", "in front of a dark background"),
    "grey": ("on a grey background", "on a plain grey background", "against a grey background"),
    "striped": ("on a striped background", "over a striped background", "in front of stripes"),
    "checkered": ("on a checkered background", "over a checkerboard", "on a chequered background"),
    "gradient": ("on a gradient background", "over a shaded background", "on a background fading from dark to light"),
}
# Where a still's object is, by the third of the frame its centre falls in (row, column).
POSITION_PHRASES = {
    (0, 0): "at the top left",
    (0, 1): "at the top",
    (0, 2): "at the top right",
    (1, 0): "on the left",
    (1, 1): "in the middle",
    (1, 2): "on the right",
    (2, 0): "at the bottom left",
    (2, 1): "at the bottom",
    (2, 2): "at the bottom right",
}
SIZES = {"small": 0.07, "": 0.1, "large": 0.14}  # a still object's radius as a fraction of the frame ("" = unnamed)

RADIUS = 0.1  # an object's radius as a fraction of the frame: at 48 pixels about 1.6 patches of 6 across
TRAVEL = 0.3  # the fraction of the frame a moving object crosses (at 48 pixels, 2.4 patches of 6)
OBJECT_COUNTS = (1, 2, 3, 4)
OBJECT_COUNT_WEIGHTS = (0.25, 0.35, 0.25, 0.15)


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    motion: str
    x: float  # centre of its trajectory (its place half-way through the clip), as a fraction of the frame width
    y: float  # and height
    radius: float = RADIUS

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)


@dataclass(frozen=True)
class Query:
    """What a caption says: the objects it names (colour, shape, motion) and the background, or None where the
    caption does not name it. A video is a correct answer when it shows all of it."""

    objects: tuple[tuple[str, str, str], ...]
    background: str | None

    def satisfied_by(self, clip: "Clip", view: str = "everything") -> bool:
        """Whether `clip` shows everything the caption says, as seen by an observer blind to part of it: `view` is
        "everything", "no frame order" (a motion and its time reversal look alike), "no motion", or "no binding"
        (the named colours, shapes and motions are each somewhere in the scene, on whichever objects)."""
        if self.background is not None and self.background != clip.background:
            return False
        if view == "no binding":
            return all(
                any(o.colour == colour for o in clip.objects)
                and any(o.shape == shape for o in clip.objects)
                and any(_motion_seen(o.motion, view) == _motion_seen(motion, view) for o in clip.objects)
                for colour, shape, motion in self.objects
            )
        shown = {(o.colour, o.shape, _motion_seen(o.motion, view)) for o in clip.objects}
        return all((colour, shape, _motion_seen(motion, view)) in shown for colour, shape, motion in self.objects)


def _motion_seen(motion: str, view: str) -> str:
    if view == "no motion":
        return ""
    if view == "no frame order":
        return min(motion, REVERSED.get(motion, motion))
    return motion


ORACLE_VIEWS = ("everything", "no frame order", "no motion", "no binding")


@dataclass(frozen=True)
class Clip:
    video_id: str
    split: str  # "train", or one of EVAL_SPLITS
    background: str
    objects: tuple[SceneObject, ...]
    captions: tuple[str, ...]
    static_caption: str
    group: int | None = None  # the minimal-pair group
    query: Query | None = None  # evaluation splits: what the clip's one caption (`captions[0]`) says
    query_type: str | None = None  # evaluation splits: one of QUERY_TYPES
    positives: tuple[str, ...] = ()  # evaluation splits: the video ids of the split that show all the query says
    # Training, one entry per caption: the clips of the split that show all the caption says (its own included), the
    # caption's foil (a false caption of this clip: a direction reversed, two colours or motions swapped; None where
    # there is none) and the clips of the split that the foil is true of. In a batch, a caption is not a negative of
    # another clip it fits, nor a foil of a clip it is true of.
    caption_positives: tuple[tuple[str, ...], ...] = ()
    foils: tuple[str | None, ...] = ()
    foil_positives: tuple[tuple[str, ...], ...] = ()

    @property
    def content(self) -> tuple[str, frozenset]:
        """What the clip shows, places aside: two clips with the same content are indistinguishable by any caption."""
        return self.background, frozenset(o.combination for o in self.objects)


def all_combinations(colours=tuple(COLOURS), shapes=SHAPES) -> list[tuple[str, str, str]]:
    return [
        (colour, shape, motion)
        for colour in colours
        for shape in shapes
        for motion in MOTIONS
        if not (motion == "rotate" and shape in ROTATION_SYMMETRIC)
    ]


def open_vocab_combinations() -> list[tuple[str, str, str]]:
    """Combinations with a colour or a shape that only the pretraining stills show."""
    return [
        c
        for c in all_combinations(tuple(ALL_COLOURS), SHAPES + PRETRAIN_SHAPES)
        if c[0] in PRETRAIN_COLOURS or c[1] in PRETRAIN_SHAPES
    ]


def held_out_combinations(seed: int, fraction: float = 0.1) -> list[tuple[str, str, str]]:
    """The (colour, shape, motion) combinations reserved for the compositional test: every colour, shape and motion
    still occurs in training, only these combinations of them do not.

    They are drawn in blocks of 2 colours x 2 shapes x 2 motions (at least `fraction` of all combinations), so that
    each held-out combination has held-out neighbours that differ from it in one attribute: the compositional split
    has minimal pairs too."""
    combinations = set(all_combinations())
    target = max(1, round(fraction * len(combinations)))
    rng = np.random.default_rng([seed, 1])
    held_out: set[tuple[str, str, str]] = set()
    while len(held_out) < target:
        colours = rng.choice(list(COLOURS), size=2, replace=False)
        shapes = rng.choice(list(SHAPES), size=2, replace=False)
        motions = rng.choice(list(MOTIONS), size=2, replace=False)
        block = {(str(c), str(s), str(m)) for c in colours for s in shapes for m in motions}
        if block <= combinations and block.isdisjoint(held_out):
            held_out |= block
    return sorted(held_out)


# --- layout ------------------------------------------------------------------------------------------------------


def swept_box(obj: SceneObject) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of everything the object covers during the clip, in frame fractions."""
    half_x = half_y = obj.radius * (1.5 if obj.motion in ("grow", "shrink") else 1.15)
    if obj.motion in ("left", "right"):
        half_x += TRAVEL / 2
    elif obj.motion in ("up", "down"):
        half_y += TRAVEL / 2
    return obj.x - half_x, obj.y - half_y, obj.x + half_x, obj.y + half_y


def _overlaps(a, b, margin: float = 0.02) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def place(objects: list[SceneObject], rng: np.random.Generator, tries: int = 200) -> tuple[SceneObject, ...] | None:
    """The objects at random places in the frame where no two ever overlap (their whole trajectories apart), or None
    when no such layout was found."""
    placed: list[SceneObject] = []
    boxes: list[tuple] = []
    for obj in objects:
        for _ in range(tries):
            candidate = replace(obj, x=0.5, y=0.5)
            left, top, right, bottom = swept_box(candidate)
            half_w, half_h = (right - left) / 2, (bottom - top) / 2
            if half_w > 0.48 or half_h > 0.48:
                return None
            x = float(rng.uniform(0.02 + half_w, 0.98 - half_w))
            y = float(rng.uniform(0.02 + half_h, 0.98 - half_h))
            candidate = replace(obj, x=round(x, 4), y=round(y, 4))
            box = swept_box(candidate)
            if not any(_overlaps(box, other) for other in boxes):
                placed.append(candidate)
                boxes.append(box)
                break
        else:
            return None
    return tuple(placed)


def _distinct(combinations) -> bool:
    """Every object of a scene has its own (colour, shape): "the red circle" names exactly one."""
    pairs = [c[:2] for c in combinations]
    return len(set(pairs)) == len(pairs)


def _scene(pool: list, rng: np.random.Generator, counts=OBJECT_COUNTS, weights=OBJECT_COUNT_WEIGHTS):
    """(objects, background): 1-4 objects from `pool`, each with its own (colour, shape), placed anywhere."""
    while True:
        count = int(rng.choice(counts, p=np.asarray(weights) / sum(weights)))
        combinations: list = []
        while len(combinations) < count:
            combination = pool[int(rng.integers(len(pool)))]
            if _distinct([*combinations, combination]):
                combinations.append(combination)
        objects = place([SceneObject(c, s, m, 0.5, 0.5) for c, s, m in combinations], rng)
        if objects is not None:
            return objects, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]


# --- minimal pairs -----------------------------------------------------------------------------------------------

VARIANT_KINDS = ("binding", "motion", "colour", "shape", "background")


def _variant(objects, background: str, kind: str, pool: set, rng: np.random.Generator):
    """The scene changed in one thing, with every combination still in `pool`, or None where that is impossible:
    "binding" (two objects swap their colour, shape or motion: the same words, bound differently), "motion" (one
    object's motion; its time reversal where it has one), "colour" or "shape" (of one object), "background"."""
    if kind == "background":
        others = [b for b in BACKGROUNDS if b != background]
        return objects, others[int(rng.integers(len(others)))]
    if kind == "binding":
        if len(objects) < 2:
            return None
        for i, j in rng.permutation(list(permutations(range(len(objects)), 2))):
            for attribute in rng.permutation(["colour", "shape", "motion"]):
                a, b = objects[i], objects[j]
                if getattr(a, attribute) == getattr(b, attribute):
                    continue
                swapped = list(objects)
                swapped[i] = replace(a, **{attribute: getattr(b, attribute)})
                swapped[j] = replace(b, **{attribute: getattr(a, attribute)})
                combos = [o.combination for o in swapped]
                if all(c in pool for c in combos) and _distinct(combos):
                    placed = _replace_keeping_places(objects, swapped, rng)
                    if placed is not None:
                        return placed, background
        return None
    index = int(rng.integers(len(objects)))
    old = objects[index]
    if kind == "motion" and old.motion in REVERSED:
        values = [REVERSED[old.motion]]  # the time reversal: the pair only frame order tells apart
    else:
        values = list(rng.permutation({"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS)}[kind]))
    for value in values:
        changed = replace(old, **{kind: str(value)})
        if changed == old or changed.combination not in pool:
            continue
        new = [changed if k == index else o for k, o in enumerate(objects)]
        if not _distinct([o.combination for o in new]):
            continue
        placed = _replace_keeping_places(objects, new, rng)
        if placed is not None:
            return placed, background
    return None


def _replace_keeping_places(old, new, rng) -> tuple | None:
    """The changed objects at their old places when their new trajectories still fit, else placed anew."""
    boxes = [swept_box(o) for o in new]
    inside = all(b[0] >= 0.0 and b[1] >= 0.0 and b[2] <= 1.0 and b[3] <= 1.0 for b in boxes)
    apart = not any(_overlaps(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1 :])
    return tuple(new) if inside and apart else place(list(new), rng)


def _group(pool: list, pool_set: set, rng: np.random.Generator, size: int, used: set | None):
    """A scene and up to `size - 1` variants of it, each different from it in one thing, all with contents not in
    `used` (when given: an evaluation split never shows one content twice). Returns [(objects, background, kind)]."""
    while True:
        objects, background = _scene(pool, rng)
        content = (background, frozenset(o.combination for o in objects))
        if used is None or content not in used:
            break
    group = [(objects, background, "anchor")]
    contents = {content}
    kinds = list(VARIANT_KINDS) if len(objects) > 1 else [k for k in VARIANT_KINDS if k != "binding"]
    order = kinds[:2] + list(rng.permutation(kinds[2:]))  # binding and motion first: the pairs that matter most
    for kind in order:
        if len(group) >= size:
            break
        variant = _variant(objects, background, str(kind), pool_set, rng)
        if variant is None:
            continue
        content = (variant[1], frozenset(o.combination for o in variant[0]))
        if content in contents or (used is not None and content in used):
            continue
        contents.add(content)
        group.append((*variant, str(kind)))
    if used is not None:
        used |= contents
    return group


# --- words -------------------------------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(colour: str, shape: str, rng: np.random.Generator, size: str = "") -> str:
    if size:
        return f"{_article(size)} {size} {colour} {shape}"
    if rng.random() < 0.25:
        return f"{_article(shape)} {shape} in {colour}"
    return f"{_article(colour)} {colour} {shape}"


def caption_text(query: Query, seed) -> str:
    """A caption of `query`, worded from `seed` alone: the same seed words a query and its foil alike, so that a
    foil differs from its caption in the swapped words only."""
    rng = np.random.default_rng(seed)
    clauses = []
    for colour, shape, motion in query.objects:
        phrase = MOTION_PHRASES[motion][int(rng.integers(len(MOTION_PHRASES[motion])))]
        clauses.append(f"{_noun_phrase(colour, shape, rng)} {phrase}")
    if len(clauses) == 1:
        body = clauses[0]
    else:
        joiner = ("while", "and", "as")[int(rng.integers(3))]
        body = ", ".join(clauses[:-1]) + f" {joiner} " + clauses[-1]
    if query.background is None:
        return body
    where = BACKGROUND_PHRASES[query.background][int(rng.integers(len(BACKGROUND_PHRASES[query.background])))]
    return f"{where}, {body}" if rng.random() < 0.3 else f"{body} {where}"


def _static_caption(objects, background: str, rng: np.random.Generator) -> str:
    where = str(rng.choice(BACKGROUND_PHRASES[background]))
    things = " and ".join(_noun_phrase(o.colour, o.shape, rng) for o in objects)
    return f"{things} {where}" if rng.random() < 0.7 else f"{where}, {things}"


def random_query(objects, background: str, rng: np.random.Generator) -> Query:
    """A training caption's content: a random non-empty subset of the objects (every one about a third of the time),
    and the background about two times in three."""
    count = len(objects) if rng.random() < 0.35 else int(rng.integers(1, len(objects) + 1))
    named = sorted(rng.choice(len(objects), size=count, replace=False).tolist())
    order = [objects[k] for k in rng.permutation(named)]
    return Query(tuple(o.combination for o in order), background if rng.random() < 0.65 else None)


def foil_query(query: Query, clip_objects, rng: np.random.Generator) -> Query | None:
    """A false caption close to `query`: one named object's motion reversed in time, or two named objects' colours
    or motions swapped, checked to be false of the clip; None where none exists."""
    candidates = []
    named = list(query.objects)
    for k, (colour, shape, motion) in enumerate(named):
        if motion in REVERSED:
            candidates.append([*named[:k], (colour, shape, REVERSED[motion]), *named[k + 1 :]])
    for i in range(len(named)):
        for j in range(i + 1, len(named)):
            for attribute in (0, 2):  # colour, motion
                a, b = list(named[i]), list(named[j])
                if a[attribute] == b[attribute]:
                    continue
                a[attribute], b[attribute] = b[attribute], a[attribute]
                swapped = list(named)
                swapped[i], swapped[j] = tuple(a), tuple(b)
                if _distinct(swapped):
                    candidates.append(swapped)
    shown = {o.combination for o in clip_objects}
    candidates = [c for c in candidates if not all(tuple(o) in shown for o in c)]
    if not candidates:
        return None
    return Query(tuple(tuple(o) for o in candidates[int(rng.integers(len(candidates)))]), query.background)


def evaluation_query(clip_objects, background: str, others: list, rng: np.random.Generator) -> Query:
    """The one caption of an evaluation clip: it names enough to rule out every other clip of its minimal-pair group
    (`others`, as (objects, background)), and a random share of the rest (so that many queries name one object of
    several)."""
    required: set[int] = set()
    name_background = False
    for other_objects, other_background in others:
        other = {o.combination for o in other_objects}
        differing = [k for k, o in enumerate(clip_objects) if o.combination not in other]
        if differing:
            if not any(k in required for k in differing):
                required.add(differing[int(rng.integers(len(differing)))])
        elif other_background != background:
            name_background = True
    optional = [k for k in range(len(clip_objects)) if k not in required]
    extra = [k for k in optional if rng.random() < 0.3]
    named = sorted(required | set(extra)) or [int(rng.integers(len(clip_objects)))]
    order = [clip_objects[k] for k in rng.permutation(named)]
    if not name_background:
        name_background = rng.random() < 0.5
    return Query(tuple(o.combination for o in order), background if name_background else None)


def query_type(query: Query, clip_objects, kinds_with_anchor: set[str]) -> str:
    """ "binding" or "motion" when the clip has such a minimal pair in its group, else "subset" when the caption
    names fewer objects than the clip shows, else "all"."""
    for kind in ("binding", "motion"):
        if kind in kinds_with_anchor:
            return kind
    return "subset" if len(query.objects) < len(clip_objects) else "all"


# --- the plan ----------------------------------------------------------------------------------------------------


def split_sizes(
    num_videos: int,
    val_size: int | None = None,
    test_size: int | None = None,
    compositional_size: int | None = None,
    open_vocab_size: int | None = None,
) -> dict[str, int]:
    """Clips per split: each evaluation split 10% of `num_videos` unless given; training gets the rest."""
    sizes = {}
    given = dict(val=val_size, test=test_size, compositional=compositional_size, open_vocab=open_vocab_size)
    for split, size in given.items():
        size = max(1, round(0.1 * num_videos)) if size is None else size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"`{split}_size` must be an integer >= 1, got {size!r}.")
        sizes[split] = size
    train = num_videos - sum(sizes.values())
    if train < 1:
        raise ValueError(f"{num_videos} videos leave no training clip after the evaluation splits {sizes}.")
    return {"train": train, **sizes}


def plan_corpus(
    num_videos: int,
    seed: int,
    captions_per_video: int = 8,
    val_size: int | None = None,
    test_size: int | None = None,
    compositional_size: int | None = None,
    open_vocab_size: int | None = None,
    held_out_fraction: float = 0.1,
) -> tuple[list[Clip], list[tuple[str, str, str]]]:
    """The content of every clip (no pixels yet): which split and group, objects, background, captions, foils, and
    for evaluation clips the query, its type and its correct answers. Every split comes in minimal-pair groups of up
    to `GROUP_SIZE` (`Clip.group`); an evaluation split never shows one content twice."""
    if num_videos < 5:
        raise ValueError(
            f"The synthetic corpus needs 5 videos or more (train, val, test, compositional, open_vocab), "
            f"got {num_videos}."
        )
    sizes = split_sizes(num_videos, val_size, test_size, compositional_size, open_vocab_size)
    held_out = held_out_combinations(seed, held_out_fraction)
    held_out_set = set(held_out)
    pools = {"compositional": held_out, "open_vocab": open_vocab_combinations()}
    seen = [c for c in all_combinations() if c not in held_out_set]
    rng = np.random.default_rng([seed, 2])
    planned = []  # (split, group id, objects, background, kind, the group's scenes)
    group_id = 0
    for split in ("train", *EVAL_SPLITS):
        pool = pools.get(split, seen)
        pool_set, used, made = set(pool), (None if split == "train" else set()), 0
        while made < sizes[split]:
            group = _group(pool, pool_set, rng, min(GROUP_SIZE, sizes[split] - made), used)
            scenes = [(objects, background) for objects, background, _ in group]
            planned += [(split, group_id, objects, background, kind, scenes) for objects, background, kind in group]
            made, group_id = made + len(group), group_id + 1

    train_queries: dict[str, tuple[list[Query], list[Query | None]]] = {}
    group_kinds: dict[int, set[str]] = {}
    for _, group, _, _, kind, _ in planned:
        group_kinds.setdefault(group, set()).add(kind)
    clips = []
    for i, (split, group, objects, background, kind, scenes) in enumerate(planned):
        video_id = f"video{i}"
        wording = np.random.default_rng([seed, 3, i])
        static_caption = _static_caption(objects, background, wording)
        if split == "train":
            queries = [random_query(objects, background, wording) for _ in range(captions_per_video)]
            seeds = [[seed, 4, i, k] for k in range(captions_per_video)]
            captions = tuple(caption_text(q, s) for q, s in zip(queries, seeds))
            foils = [foil_query(q, objects, wording) for q in queries]
            train_queries[video_id] = (queries, foils)
            foil_texts = tuple(None if f is None else caption_text(f, s) for f, s in zip(foils, seeds))
            clips.append(Clip(video_id, split, background, objects, captions, static_caption, group, foils=foil_texts))
            continue
        others = [scene for scene in scenes if scene != (objects, background)]
        query = evaluation_query(objects, background, others, wording)
        # The kinds of minimal pair this clip is part of: the anchor pairs with every variant, a variant with it.
        kinds = group_kinds[group] if kind == "anchor" else {kind}
        captions = (caption_text(query, [seed, 4, i, 0]),)
        clips.append(
            Clip(video_id, split, background, objects, captions, static_caption, group, query,
                 query_type(query, objects, kinds))
        )  # fmt: skip
    # The correct answers of each evaluation query: every clip of its split that shows all it says.
    by_split: dict[str, list[Clip]] = {}
    for clip in clips:
        by_split.setdefault(clip.split, []).append(clip)
    for k, clip in enumerate(clips):
        if clip.query is not None:
            positives = tuple(o.video_id for o in by_split[clip.split] if clip.query.satisfied_by(o))
            clips[k] = replace(clip, positives=positives)
    # The same for every training caption and foil, through an index from each (colour, shape, motion) and background
    # to the training clips that show it (a full scan would be 8000 x 1000 checks).
    fits = _ContentIndex(by_split.get("train", []))
    for k, clip in enumerate(clips):
        if clip.video_id in train_queries:
            queries, foils = train_queries[clip.video_id]
            clips[k] = replace(
                clip,
                caption_positives=tuple(fits(q) for q in queries),
                foil_positives=tuple(() if f is None else fits(f) for f in foils),
            )
    return clips, held_out


class _ContentIndex:
    """The clips (of one split) that show all a query says, by intersecting the clips of each named thing."""

    def __init__(self, clips: list[Clip]):
        self.order = {clip.video_id: n for n, clip in enumerate(clips)}
        self.by_thing: dict[object, set[str]] = {}
        for clip in clips:
            self.by_thing.setdefault(clip.background, set()).add(clip.video_id)
            for obj in clip.objects:
                self.by_thing.setdefault(obj.combination, set()).add(clip.video_id)

    def __call__(self, query: Query) -> tuple[str, ...]:
        things = [*query.objects, *([query.background] if query.background is not None else [])]
        found = set.intersection(*(self.by_thing.get(thing, set()) for thing in things))
        return tuple(sorted(found, key=self.order.__getitem__))


# --- what the benchmark reads ------------------------------------------------------------------------------------

ERROR_KINDS = ("none", "colour", "shape", "motion", "direction", "binding", "background", "several")


def query_error(query: Query, other: Clip) -> str:
    """What `other` fails of what `query` says: "none" (it shows everything: a correct answer), "background",
    "binding" (every named colour, shape and motion is there, on other objects), "direction" (a named object moves
    the opposite way: only frame order tells), "colour", "shape" or "motion" (of one named object, the rest
    right), or "several"."""
    if query.satisfied_by(other):
        return "none"
    background_wrong = query.background is not None and query.background != other.background
    shown = {o.combination for o in other.objects}
    missing = [n for n in query.objects if n not in shown]
    if not missing:
        return "background"
    if not background_wrong and query.satisfied_by(other, "no binding"):
        return "binding"
    kinds = []
    for colour, shape, motion in missing:
        # The object of `other` closest to the named one: most attributes equal.
        best = max(other.objects, key=lambda o: (o.colour == colour) + (o.shape == shape) + (o.motion == motion))
        differ = [a for a, v in (("colour", colour), ("shape", shape), ("motion", motion)) if getattr(best, a) != v]
        if differ == ["motion"] and REVERSED.get(motion) == best.motion:
            differ = ["direction"]
        kinds.append(differ[0] if len(differ) == 1 else "several")
    kinds += ["background"] if background_wrong else []
    return kinds[0] if len(kinds) == 1 else "several"


def oracle_r1(clips: list[Clip]) -> dict[str, float]:
    """Text->video R@1 (percent) of observers that see everything, or everything but one thing (`ORACLE_VIEWS`), on
    one evaluation split: an observer scores 1 for every video that shows all it can see of the caption, and breaks
    ties at random, so a query whose correct answers tie with `e` wrong videos is a hit with probability
    `p / (p + e)`. "everything" is 100 exactly when no query has an indistinguishable wrong answer."""
    result = {}
    for view in ORACLE_VIEWS:
        hits = 0.0
        for clip in clips:
            positives = set(clip.positives)
            tied = sum(1 for o in clips if o.video_id not in positives and clip.query.satisfied_by(o, view))
            hits += len(positives) / (len(positives) + tied)
        result[view] = 100.0 * hits / len(clips)
    return result


# --- the pretraining stills --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Still:
    """One pretraining image: objects of the wider world at any place and size, with a caption that says where."""

    image: str
    background: str
    objects: tuple[SceneObject, ...]  # motion "still"
    caption: str


def plan_stills(num_stills: int, seed: int) -> list[Still]:
    """Images of the wider world (every colour and shape, the pretraining-only ones included), 1-4 objects of three
    sizes anywhere, captioned with their sizes and places: what the small CLIP learns from, and more than
    fine-tuning shows."""
    rng = np.random.default_rng([seed, 5])
    colours, shapes = list(ALL_COLOURS), list(SHAPES + PRETRAIN_SHAPES)
    stills = []
    for i in range(num_stills):
        while True:
            count = int(rng.choice(OBJECT_COUNTS, p=np.asarray(OBJECT_COUNT_WEIGHTS) / sum(OBJECT_COUNT_WEIGHTS)))
            pairs: list = []
            while len(pairs) < count:
                pair = (colours[int(rng.integers(len(colours)))], shapes[int(rng.integers(len(shapes)))])
                if pair not in pairs:
                    pairs.append(pair)
            size_names = [list(SIZES)[int(rng.integers(len(SIZES)))] for _ in pairs]
            objects = place(
                [SceneObject(c, s, "still", 0.5, 0.5, SIZES[z]) for (c, s), z in zip(pairs, size_names)], rng
            )
            if objects is not None:
                break
        background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
        things = []
        for obj, size in zip(objects, size_names):
            where = POSITION_PHRASES[(min(int(obj.y * 3), 2), min(int(obj.x * 3), 2))]
            things.append(f"{_noun_phrase(obj.colour, obj.shape, rng, size)} {where}")
        body = " and ".join(things) if len(things) < 3 else ", ".join(things[:-1]) + " and " + things[-1]
        where = str(rng.choice(BACKGROUND_PHRASES[background]))
        caption = f"{body} {where}" if rng.random() < 0.7 else f"{where}, {body}"
        stills.append(Still(f"still{i}.png", background, objects, caption))
    return stills

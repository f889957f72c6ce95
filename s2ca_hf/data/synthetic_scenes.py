"""What each clip of the built-in concept-video corpus shows and says, before any pixel: the vocabulary of colours,
shapes, motions and backgrounds, the held-out combinations of the compositional split, the captions, the
minimal-pair groups of the evaluation splits (`plan_corpus`), and what tells two clips apart (`clip_difference`).
`synthetic.py` writes the corpus from this plan; `synthetic_render.py` draws the frames."""

from dataclasses import dataclass, replace

import numpy as np


EVAL_SPLITS = ("val", "test", "compositional")
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
# Turning a circle or a ring shows nothing: those combinations do not exist.
ROTATION_SYMMETRIC = ("circle", "ring")

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


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    motion: str
    x: float  # centre at the start, as a fraction of the frame width
    y: float  # and height

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.motion)


@dataclass(frozen=True)
class Clip:
    video_id: str
    split: str  # "train", "val", "test" or "compositional"
    background: str
    objects: tuple[SceneObject, ...]
    captions: tuple[str, ...]
    static_caption: str
    group: int | None = None  # the minimal-pair group of an evaluation clip


def all_combinations() -> list[tuple[str, str, str]]:
    return [
        (colour, shape, motion)
        for colour in COLOURS
        for shape in SHAPES
        for motion in MOTIONS
        if not (motion == "rotate" and shape in ROTATION_SYMMETRIC)
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


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: SceneObject, rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        return f"{_article(obj.shape)} {obj.shape} in {obj.colour}"
    return f"{_article(obj.colour)} {obj.colour} {obj.shape}"


def _caption(objects: tuple[SceneObject, ...], background: str, rng: np.random.Generator) -> str:
    where = str(rng.choice(BACKGROUND_PHRASES[background]))
    clauses = [f"{_noun_phrase(o, rng)} {rng.choice(MOTION_PHRASES[o.motion])}" for o in objects]
    if len(clauses) == 1:
        (clause,) = clauses
        form = int(rng.integers(4))
        if form == 0:
            return f"{clause} {where}"
        if form == 1:
            return f"{where}, {clause}"
        if form == 2:
            return f"there is {_that(clause)} {where}"
        return f"{clause[clause.index(' ') + 1 :]} {where}"  # no article: "red circle moves left on ..."
    joiner = str(rng.choice(("while", "and", "as")))
    if rng.random() < 0.3:
        return f"{where}, {clauses[0]} {joiner} {clauses[1]}"
    return f"{clauses[0]} {joiner} {clauses[1]} {where}"


def _that(clause: str) -> str:
    # "a red circle rises" -> "a red circle that rises"; "a circle in red rises" -> "a circle in red that rises"
    for phrases in MOTION_PHRASES.values():
        for phrase in phrases:
            if clause.endswith(" " + phrase):
                return f"{clause[: -len(phrase) - 1]} that {phrase}"
    return clause


def _static_caption(objects: tuple[SceneObject, ...], background: str, rng: np.random.Generator) -> str:
    where = str(rng.choice(BACKGROUND_PHRASES[background]))
    things = " and ".join(_noun_phrase(o, rng) for o in objects)
    return f"{things} {where}" if rng.random() < 0.7 else f"{where}, {things}"


def split_sizes(
    num_videos: int, val_size: int | None = None, test_size: int | None = None, compositional_size: int | None = None
) -> dict[str, int]:
    """Clips per split: each evaluation split 10% of `num_videos` unless given; training gets the rest."""
    sizes = {}
    for split, size in (("val", val_size), ("test", test_size), ("compositional", compositional_size)):
        size = max(1, round(0.1 * num_videos)) if size is None else size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"`{split}_size` must be an integer >= 1, got {size!r}.")
        sizes[split] = size
    train = num_videos - sum(sizes.values())
    if train < 1:
        raise ValueError(f"{num_videos} videos leave no training clip after the evaluation splits {sizes}.")
    return {"train": train, **sizes}


def _scene(pool: list, rng: np.random.Generator) -> tuple[tuple[SceneObject, ...], str]:
    """One or two objects from `pool` (distinct in colour or shape, so each caption names them unambiguously), in
    places where they never overlap, and a background."""
    count = 1 if rng.random() < 0.7 else 2
    combinations = []
    while len(combinations) < count:
        combination = pool[int(rng.integers(len(pool)))]
        if all(combination[:2] != other[:2] for other in combinations):
            combinations.append(combination)
    if count == 1:
        places = [(0.5, 0.5)]
    else:  # one object in each half
        places = [(0.5, 0.27), (0.5, 0.73)] if rng.random() < 0.5 else [(0.27, 0.5), (0.73, 0.5)]
    objects = tuple(
        SceneObject(colour, shape, motion, x, y) for (colour, shape, motion), (x, y) in zip(combinations, places)
    )
    return objects, BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]


def _variant(objects, background: str, attribute: str, pool: set, rng: np.random.Generator):
    """The scene changed in `attribute` alone ("colour", "shape", "motion" of one object, "background", or
    "binding": two objects swap colours), with every combination still in `pool`; None where none exists."""
    if attribute == "background":
        others = [b for b in BACKGROUNDS if b != background]
        return objects, others[int(rng.integers(len(others)))]
    if attribute == "binding":
        if len(objects) != 2 or objects[0].colour == objects[1].colour or objects[0].shape == objects[1].shape:
            return None
        swapped = (replace(objects[0], colour=objects[1].colour), replace(objects[1], colour=objects[0].colour))
        return (swapped, background) if all(o.combination in pool for o in swapped) else None
    index = int(rng.integers(len(objects)))
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "motion": list(MOTIONS)}[attribute]
    for value in rng.permutation(values):
        changed = replace(objects[index], **{attribute: str(value)})
        if changed == objects[index] or changed.combination not in pool:
            continue
        if any(changed.combination[:2] == o.combination[:2] for i, o in enumerate(objects) if i != index):
            continue  # the two objects must stay distinguishable
        return tuple(changed if i == index else o for i, o in enumerate(objects)), background
    return None


def _minimal_pair_group(pool: list, pool_set: set, rng: np.random.Generator, size: int) -> list:
    """A scene and up to `size - 1` variants of it, each different from it in exactly one attribute."""
    objects, background = _scene(pool, rng)
    group = [(objects, background)]
    # Binding first where there are two objects: it is the pair that only concept-level matching can tell apart.
    attributes = (["binding"] if len(objects) == 2 else []) + list(rng.permutation(["colour", "shape", "motion"]))
    for attribute in [*attributes, "background"]:
        if len(group) >= size:
            break
        variant = _variant(objects, background, str(attribute), pool_set, rng)
        if variant is not None:
            group.append(variant)
    return group


def plan_corpus(
    num_videos: int,
    seed: int,
    captions_per_video: int = 8,
    val_size: int | None = None,
    test_size: int | None = None,
    compositional_size: int | None = None,
    held_out_fraction: float = 0.1,
) -> tuple[list[Clip], list[tuple[str, str, str]]]:
    """The content of every clip (no pixels yet): which split, objects, background and captions.

    Training clips are drawn independently; the clips of each evaluation split come in minimal-pair groups of up to
    `GROUP_SIZE` (`Clip.group`)."""
    if num_videos < 4:
        raise ValueError(
            f"The synthetic corpus needs 4 videos or more (train, val, test, held-out), got {num_videos}."
        )
    sizes = split_sizes(num_videos, val_size, test_size, compositional_size)
    held_out = held_out_combinations(seed, held_out_fraction)
    held_out_set = set(held_out)
    seen = [c for c in all_combinations() if c not in held_out_set]
    scenes = []  # (split, group, objects, background)
    rng = np.random.default_rng([seed, 2])
    for _ in range(sizes["train"]):
        scenes.append(("train", None, *_scene(seen, rng)))
    group_id = 0
    for split in EVAL_SPLITS:
        pool = held_out if split == "compositional" else seen
        pool_set, made = set(pool), 0
        while made < sizes[split]:
            group = _minimal_pair_group(pool, pool_set, rng, min(GROUP_SIZE, sizes[split] - made))
            scenes += [(split, group_id, objects, background) for objects, background in group]
            made, group_id = made + len(group), group_id + 1
    clips = []
    for i, (split, group, objects, background) in enumerate(scenes):
        wording = np.random.default_rng([seed, 3, i])
        captions = tuple(_caption(objects, background, wording) for _ in range(captions_per_video))
        static_caption = _static_caption(objects, background, wording)
        clips.append(Clip(f"video{i}", split, background, objects, captions, static_caption, group))
    return clips, held_out


def clip_difference(query: Clip, other: Clip) -> str:
    """What tells `other` apart from `query`: "colour", "shape", "motion" (of one object), "background", "binding"
    (two objects with their colours swapped), "objects" (another number of objects), "several", or "none"."""
    if len(query.objects) != len(other.objects):
        return "objects"
    same_background = query.background == other.background
    if len(query.objects) == 2 and same_background:
        colours = sorted(o.colour for o in query.objects) == sorted(o.colour for o in other.objects)
        rest = sorted((o.shape, o.motion) for o in query.objects) == sorted((o.shape, o.motion) for o in other.objects)
        combos = sorted(o.combination for o in query.objects) != sorted(o.combination for o in other.objects)
        if colours and rest and combos:
            return "binding"
    pairings = [list(zip(query.objects, other.objects))]
    if len(query.objects) == 2:
        pairings.append(list(zip(query.objects, other.objects[::-1])))
    changes = min(
        (
            [a for x, y in pairing for a in ("colour", "shape", "motion") if getattr(x, a) != getattr(y, a)]
            for pairing in pairings
        ),
        key=len,
    )
    changes += [] if same_background else ["background"]
    if not changes:
        return "none"
    return changes[0] if len(changes) == 1 else "several"

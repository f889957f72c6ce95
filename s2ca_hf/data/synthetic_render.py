"""The pixels and bytes of a synthetic clip: `render_clip` draws the planned objects (`synthetic_scenes.Clip`) on
their background frame by frame, `render_still` draws a pretraining still, and `encode_video` writes frames as H.264
whose bytes depend only on the frames."""

import numpy as np

from ..video_io import encode_frames
from .synthetic_scenes import ALL_COLOURS, TRAVEL, Clip, Still


def _background(kind: str, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    stripe = max(size // 16, 2)
    if kind == "black":
        grey = np.zeros((size, size))
    elif kind == "grey":
        grey = np.full((size, size), 96.0)
    elif kind == "striped":
        grey = np.where((xx // stripe) % 2 == 0, 40.0, 100.0)
    elif kind == "checkered":
        grey = np.where(((xx // (2 * stripe)) + (yy // (2 * stripe))) % 2 == 0, 40.0, 100.0)
    else:  # gradient
        grey = xx / max(size - 1, 1) * 120.0
    return np.repeat(grey[:, :, None], 3, axis=2).astype(np.uint8)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside a shape of radius `r`, in coordinates `(u, v)` centred on it and already rotated."""
    if shape == "circle":
        return u**2 + v**2 <= r**2
    if shape == "ring":
        d2 = u**2 + v**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "cross":
        arm = 0.35 * r
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    if shape == "hexagon":
        return (np.abs(v) <= 0.87 * r) & (0.5 * np.abs(v) + 0.87 * np.abs(u) <= 0.87 * r)
    if shape == "semicircle":  # the upper half of a disc, its flat side down
        return (u**2 + (v - 0.35 * r) ** 2 <= r**2) & (v <= 0.35 * r)
    if shape == "star":  # five points: the radius swings between 0.45 r and r with the angle
        angle = np.arctan2(u, -v)
        edge = r * (0.45 + 0.55 * np.abs(np.cos(2.5 * angle)) ** 2)
        return u**2 + v**2 <= edge**2
    # triangle pointing up (v grows downwards in image coordinates)
    return (v <= 0.5 * r) & (v >= -r + 1.7 * np.abs(u))


def _draw(frame: np.ndarray, shape: str, value, x: float, y: float, r: float, angle: float, grid) -> None:
    yy, xx = grid
    dx, dy = xx - x, yy - y
    cos, sin = np.cos(angle), np.sin(angle)
    frame[_shape_mask(shape, cos * dx + sin * dy, -sin * dx + cos * dy, r)] = value


def _pose(obj, frame_index: int, num_frames: int, size: int) -> tuple[float, float, float, float] | None:
    """(x, y, radius, angle) in pixels of an object in one frame of a clip, or None while it is blinked off. Its
    (x, y) is its place half-way through; a moving object crosses `TRAVEL` of the frame, a growing one goes from half
    to one and a half its radius."""
    t = frame_index / max(num_frames - 1, 1)
    base, travel = obj.radius * size, TRAVEL * size
    x, y, r, angle = obj.x * size, obj.y * size, base, 0.0
    if obj.motion == "left":
        x += (0.5 - t) * travel
    elif obj.motion == "right":
        x += (t - 0.5) * travel
    elif obj.motion == "up":
        y += (0.5 - t) * travel
    elif obj.motion == "down":
        y += (t - 0.5) * travel
    elif obj.motion == "grow":
        r = base * (0.5 + t)
    elif obj.motion == "shrink":
        r = base * (1.5 - t)
    elif obj.motion == "rotate":
        angle = 2 * np.pi * t
    # Three frames on, three off: out of step with one-frame-per-second sampling at 4 fps, so that sampled frames
    # show both states.
    if obj.motion == "blink" and (frame_index // 3) % 2 == 1:
        return None
    return x, y, r, angle


def render_clip(clip: Clip, size: int, num_frames: int) -> np.ndarray:
    """`(num_frames, size, size, 3)` uint8 frames of a clip: its objects drawn in order on its background."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = np.repeat(_background(clip.background, size)[None], num_frames, axis=0)
    for frame_index in range(num_frames):
        for obj in clip.objects:
            pose = _pose(obj, frame_index, num_frames, size)
            if pose is not None:
                _draw(frames[frame_index], obj.shape, ALL_COLOURS[obj.colour], *pose, grid)
    return frames


def object_labels(clip: Clip, size: int, num_frames: int, frame_indices: list[int]) -> np.ndarray:
    """`(len(frame_indices), size, size)` int8: which object each pixel of those frames shows (its index in
    `clip.objects`, the last drawn where they overlap, as `render_clip` paints), -1 for the background."""
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    labels = np.full((len(frame_indices), size, size), -1, dtype=np.int8)
    for row, frame_index in enumerate(frame_indices):
        for number, obj in enumerate(clip.objects):
            pose = _pose(obj, frame_index, num_frames, size)
            if pose is not None:
                _draw(labels[row], obj.shape, number, *pose, grid)
    return labels


def render_still(still: Still, size: int) -> np.ndarray:
    """`(size, size, 3)` uint8: a pretraining still."""
    frame = _background(still.background, size)
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    for obj in still.objects:
        _draw(frame, obj.shape, ALL_COLOURS[obj.colour], obj.x * size, obj.y * size, obj.radius * size, 0.0, grid)
    return frame


def encode_video(path: str, frames: np.ndarray, fps: int) -> None:
    """Writes frames as an H.264 mp4 with PyAV, so that the bytes depend only on the frames."""
    # A keyframe every 2 s keeps seeking useful. `threads=1` alone was not enough: x264's lookahead still ran in a
    # thread of its own and the same frames gave other bytes in about one run in forty (the flaky same-seed test);
    # with the lookahead and macroblock-tree rate control off, 160 repeated encodings under load were identical.
    params = "threads=1:lookahead-threads=1:sync-lookahead=0:rc-lookahead=0:mbtree=0"
    encode_frames(path, frames, fps, "libx264", {"g": str(2 * fps), "threads": "1", "x264-params": params})

"""read_frames: the frames the policy selects, identified by content (docs/datasets.md), and one error for bad
files."""

import os

import numpy as np
import pytest
import torch
from helpers import frame_numbers, write_numbered_video

from s2ca_hf.frame_policy import FramePolicy
from s2ca_hf.tiny import tiny_processor
from s2ca_hf.video_io import VideoDecodeError, VideoNotFoundError, read_frames


def test_short_clip_keeps_every_second_and_pads(tmp_path):
    # 9 frames at 2 fps: 5 seconds (ceil(9 / 2)), the first frame of each: 0, 2, 4, 6, 8.
    path = write_numbered_video(tmp_path / "short.mp4", 9, fps=2)
    clip = read_frames(path, FramePolicy(max_frames=12))
    assert clip.frames.shape == (12, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_mask.tolist() == [1] * 5 + [0] * 7
    assert frame_numbers(clip.real_frames) == [0, 2, 4, 6, 8] == clip.frame_indices
    assert not clip.frames[5:].any()  # zero padding, nothing duplicated
    assert (clip.num_video_frames, clip.fps) == (9, 2.0)


@pytest.mark.parametrize(
    ("slice_framepos", "expected"),
    [
        # 30 frames at 2 fps: 15 candidate frames 0, 2, ..., 28; np.linspace(0, 14, 4, dtype=int) = 0, 4, 9, 14
        ("uniform", [0, 8, 18, 28]),
        ("head", [0, 2, 4, 6]),
        ("tail", [22, 24, 26, 28]),
    ],
)
def test_long_clip_is_sliced_to_max_frames(tmp_path, slice_framepos, expected):
    path = write_numbered_video(tmp_path / "long.mp4", 30, fps=2)
    clip = read_frames(path, FramePolicy(max_frames=4, slice_framepos=slice_framepos))
    assert clip.frame_mask.tolist() == [1, 1, 1, 1]
    assert frame_numbers(clip.real_frames) == expected


def test_fractional_fps_is_truncated_and_window_applies(tmp_path):
    # 2.5 fps -> 2 (CLIP4Clip truncates); window [3, 6] s: frames 6, 8, 10, 12.
    path = write_numbered_video(tmp_path / "frac.mp4", 30, fps=2.5)
    clip = read_frames(path, FramePolicy(max_frames=12), start_time=3, end_time=6)
    assert frame_numbers(clip.real_frames) == [6, 8, 10, 12]
    # sample_fps=2 at 2 fps: every frame of seconds 1 and 2 (inclusive): 2, 3, 4, 5
    clip = read_frames(path, FramePolicy(max_frames=12, sample_fps=2), start_time=1, end_time=2)
    assert frame_numbers(clip.real_frames) == [2, 3, 4, 5]


def test_xpool_gives_exactly_n_frames(tmp_path):
    path = write_numbered_video(tmp_path / "x.mp4", 24, fps=4)
    clip = read_frames(path, FramePolicy(max_frames=4, frame_sampling="xpool"))
    assert frame_numbers(clip.real_frames) == [2, 8, 14, 20]  # the middle frame of 4 segments of 6
    short = write_numbered_video(tmp_path / "xs.mp4", 3, fps=4)
    clip = read_frames(short, FramePolicy(max_frames=5, frame_sampling="xpool"))
    assert clip.frame_mask.tolist() == [1] * 5
    assert frame_numbers(clip.real_frames) == [0, 1, 2, 2, 2]  # the last frame repeated


@pytest.mark.parametrize("codec,gop", [("libx264", 3), ("libx264", 250), ("mpeg4", 5)])
def test_seeking_decode_equals_sequential_decode(tmp_path, codec, gop):
    import av

    path = write_numbered_video(tmp_path / f"{codec}{gop}.mp4", 31, fps=3, codec=codec, gop=gop)
    with av.open(str(path)) as container:
        every = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    for policy in (FramePolicy(max_frames=4), FramePolicy(max_frames=7, frame_sampling="xpool")):
        clip = read_frames(path, policy)
        assert len(clip.frame_indices) == policy.max_frames
        for frame, index in zip(clip.real_frames, clip.frame_indices):
            assert np.array_equal(frame, every[index])


def test_policy_from_processor_matches_the_processors_own_decoding(tmp_path):
    processor = tiny_processor(str(tmp_path / "tok"), max_frames=3, slice_framepos="tail")
    path = write_numbered_video(tmp_path / "p.mp4", 20, fps=2)
    clip = read_frames(path, processor)
    assert FramePolicy.from_processor(processor) == FramePolicy(max_frames=3, slice_framepos="tail")
    direct = processor.video_processor(videos=[str(path)], return_tensors="pt")
    ours = processor.video_processor(videos=[clip.real_frames], do_sample_frames=False, return_tensors="pt")
    assert torch.equal(direct["pixel_values_videos"], ours["pixel_values_videos"])
    assert frame_numbers(clip.real_frames) == [14, 16, 18]


# --- errors ----------------------------------------------------------------------------------------------------


@pytest.fixture
def good_video(tmp_path):
    return write_numbered_video(tmp_path / "good.mp4", 40, fps=4, codec="libx264", gop=5)


def broken_files(tmp_path, good_video) -> dict:
    data = good_video.read_bytes()
    faststart = write_numbered_video(tmp_path / "fs.mp4", 40, fps=4, codec="libx264", gop=5, faststart=True)
    garbled = bytearray(data)
    middle = len(garbled) // 2
    garbled[middle : middle + len(garbled) // 5] = np.random.default_rng(0).bytes(len(garbled) // 5)
    files = {
        "empty": b"",
        "not a video": b"key,video_id\nret0,video6\n" * 20,
        "200-byte head": data[:200],
        "truncated (index at the end)": data[: len(data) // 2],
        "truncated (index first)": faststart.read_bytes()[: int(len(faststart.read_bytes()) * 0.8)],
        "garbled middle": bytes(garbled),
    }
    paths = {}
    for name, content in files.items():
        path = tmp_path / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".mp4")
        path.write_bytes(content)
        paths[name] = path
    return paths


def test_broken_files_raise_one_error_that_names_them(tmp_path, good_video):
    for name, path in broken_files(tmp_path, good_video).items():
        # every frame, so that mid-stream damage is reached whatever the seek plan
        with pytest.raises(VideoDecodeError, match="Could not decode video") as info:
            read_frames(path, FramePolicy(max_frames=40, frame_sampling="xpool"))
        assert info.value.path == str(path), name
        assert str(path) in str(info.value), name
    assert read_frames(good_video).frame_mask.sum() == 10


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(VideoNotFoundError, match=r"missing\.mp4: the file does not exist") as info:
        read_frames(tmp_path / "missing.mp4")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, VideoDecodeError)
    with pytest.raises(VideoDecodeError, match="it is a directory"):
        read_frames(tmp_path)


def test_invalid_policy():
    with pytest.raises(ValueError, match="slice_framepos"):
        FramePolicy(slice_framepos="middle")
    with pytest.raises(ValueError, match="frame_sampling"):
        FramePolicy(frame_sampling="random")


def test_a_forked_process_decodes_after_its_parent_did(tmp_path):
    # datasets.map(num_proc=N) forks its workers: with PyAV 18.1.1 (FFmpeg 8.1.3) a child hung in the RGB conversion
    # whenever the parent had converted a frame before the fork (swscale's automatic thread pool).
    import signal

    from s2ca_hf.video_io import write_video

    path = write_video(str(tmp_path / "clip.mp4"), num_frames=24, fps=2, size=32)
    expected = read_frames(path).frames
    pid = os.fork()
    if pid == 0:  # the child: decode, and say whether it got the parent's pixels (killed by the alarm if it hangs)
        signal.alarm(30)
        os._exit(0 if np.array_equal(read_frames(path).frames, expected) else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the forked process hung (SIGALRM) or decoded other pixels"

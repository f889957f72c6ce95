import inspect

import numpy as np
import pytest
import torch
from helpers import numbered_frames
from transformers import AutoProcessor, AutoVideoProcessor

from s2ca_hf import S2CAModel, S2CAProcessor, S2CAVideoProcessor
from s2ca_hf.frame_policy import clip4clip_frame_indices, xpool_frame_indices
from s2ca_hf.tiny import IMAGE_SIZE, tiny_config, tiny_processor
from s2ca_hf.video_io import write_video


MEAN, STD = 0.48145466, 0.26862954  # CLIP's red channel


def video_processor(**overrides) -> S2CAVideoProcessor:
    fields = dict(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return S2CAVideoProcessor(**{**fields, **overrides})


def brightness(pixel_values_videos: torch.Tensor) -> torch.Tensor:
    """The 0-255 brightness of every frame slot, read back from the normalised red channel."""
    return (pixel_values_videos[..., 0, IMAGE_SIZE // 2, IMAGE_SIZE // 2] * STD + MEAN) * 255


def kept_indices(frames: np.ndarray, out_brightness: torch.Tensor, mask: torch.Tensor) -> list[int]:
    values = frames[:, 0, 0, 0].astype(float)
    return [int(np.abs(values - b).argmin()) for b, m in zip(out_brightness.tolist(), mask.tolist()) if m]


# --- the frame policy (docs/datasets.md, "Frames, text and the frame cache") -----------------------------------------


def test_defaults_are_clip_preprocessing_and_clip4clip_policy():
    processor = S2CAVideoProcessor()
    assert processor.size == {"shortest_edge": 224} and processor.crop_size == {"height": 224, "width": 224}
    assert int(processor.resample) == 3  # bicubic
    assert list(processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    assert list(processor.image_std) == [0.26862954, 0.26130258, 0.27577711]
    assert (processor.max_frames, processor.sample_fps, processor.slice_framepos) == (12, 1, "uniform")
    assert processor.frame_sampling == "clip4clip"


@pytest.mark.parametrize(
    ("num_frames", "expected", "real"),
    [
        (5, [0, 1, 2, 3, 4], 5),  # fewer than max_frames: all kept, no duplication, the rest padded
        (12, list(range(12)), 12),
        # np.linspace(0, 29, num=12, dtype=int), the CLIP4Clip uniform slice: first and last frame kept
        (30, [0, 2, 5, 7, 10, 13, 15, 18, 21, 23, 26, 29], 12),
    ],
)
def test_uniform_slicing_and_padding_of_decoded_frames(num_frames, expected, real):
    frames = numbered_frames(num_frames)
    out = video_processor(max_frames=12)(videos=[frames], return_tensors="pt")
    assert out["pixel_values_videos"].shape == (1, 12, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert out["frame_mask"].tolist() == [[1] * real + [0] * (12 - real)]
    assert kept_indices(frames, brightness(out["pixel_values_videos"])[0], out["frame_mask"][0]) == expected
    assert torch.equal(out["pixel_values_videos"][0, real:], torch.zeros(12 - real, 3, IMAGE_SIZE, IMAGE_SIZE))


@pytest.mark.parametrize(
    "layout",
    [
        "array (n, H, W, 3)",
        "list of frame arrays",
        "tensor (n, H, W, 3)",
        "tensor (n, 3, H, W)",
        "list of frame tensors",
    ],
)
def test_decoded_frames_in_every_layout(layout):
    frames = numbered_frames(6)
    tensor = torch.from_numpy(frames)
    video = {
        "array (n, H, W, 3)": frames,
        "list of frame arrays": list(frames),
        "tensor (n, H, W, 3)": tensor,
        "tensor (n, 3, H, W)": tensor.permute(0, 3, 1, 2),
        "list of frame tensors": list(tensor.permute(0, 3, 1, 2)),
    }[layout]
    out = video_processor(max_frames=4)(videos=[video], return_tensors="pt")
    assert out["pixel_values_videos"].shape == (1, 4, 3, IMAGE_SIZE, IMAGE_SIZE)
    # linspace(0, 5, 4) as int: frames 0, 1, 3, 5
    assert kept_indices(frames, brightness(out["pixel_values_videos"])[0], out["frame_mask"][0]) == [0, 1, 3, 5]


@pytest.mark.parametrize(("slice_framepos", "expected"), [("head", list(range(12))), ("tail", list(range(18, 30)))])
def test_head_and_tail_slicing(slice_framepos, expected):
    frames = numbered_frames(30)
    out = video_processor(max_frames=12, slice_framepos=slice_framepos)(videos=[frames], return_tensors="pt")
    assert kept_indices(frames, brightness(out["pixel_values_videos"])[0], out["frame_mask"][0]) == expected


def test_xpool_policy_gives_exactly_n_frames():
    processor = video_processor(max_frames=12, frame_sampling="xpool")
    long, short = numbered_frames(30), numbered_frames(5)
    out = processor(videos=[long, short], return_tensors="pt")
    assert out["frame_mask"].tolist() == [[1] * 12, [1] * 12]
    seen = brightness(out["pixel_values_videos"])
    # Middle frames of 12 equal segments of [0, 30); the short video repeats its last frame.
    assert kept_indices(long, seen[0], out["frame_mask"][0]) == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28]
    assert kept_indices(short, seen[1], out["frame_mask"][1]) == [0, 1, 2, 3, 4] + [4] * 7
    assert xpool_frame_indices(30, 12) == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28]


def test_clip4clip_reads_the_first_frame_of_every_second():
    assert clip4clip_frame_indices(300, 30.0) == list(range(0, 300, 30))  # 10.0 s -> 10 frames
    assert clip4clip_frame_indices(315, 30.0) == list(range(0, 315, 30))  # 10.5 s -> 11 frames
    assert len(clip4clip_frame_indices(315, 30.0)) == 11
    # 29.97 fps is truncated to 29.
    assert clip4clip_frame_indices(300, 29.97) == list(range(0, 300, 29))
    # A window [2, 5] is inclusive at both ends; a reversed one is swapped; an empty one widened to a second.
    assert clip4clip_frame_indices(300, 30.0, start_time=2, end_time=5) == [60, 90, 120, 150]
    assert clip4clip_frame_indices(300, 30.0, start_time=5, end_time=2) == [60, 90, 120, 150]
    assert clip4clip_frame_indices(300, 30.0, start_time=3, end_time=3) == [90, 120]
    assert clip4clip_frame_indices(300, 30.0, start_time=8, end_time=40) == [240, 270]  # clipped to the video
    # Two frames a second: offsets 0 and fps // 2.
    assert clip4clip_frame_indices(90, 30.0, sample_fps=2) == [0, 15, 30, 45, 60, 75]
    assert clip4clip_frame_indices(0, 30.0) == []


def test_decoded_frames_with_fps_metadata_are_sampled_per_second():
    frames = numbered_frames(35)
    out = video_processor(max_frames=12)(
        videos=[frames], video_metadata=[{"total_num_frames": 35, "fps": 10.0}], return_tensors="pt"
    )
    assert out["frame_mask"][0].sum() == 4
    assert kept_indices(frames, brightness(out["pixel_values_videos"])[0], out["frame_mask"][0]) == [0, 10, 20, 30]


# --- video files -----------------------------------------------------------------------------------------------------


def test_video_file_is_decoded_with_pyav_per_second(tmp_path):
    path = write_video(str(tmp_path / "clip.mp4"), num_frames=35, fps=10)
    out = video_processor(max_frames=12)(videos=[path], return_tensors="pt")
    # 3.5 s at 10 fps: the first frame of seconds 0-3, i.e. frames 0, 10, 20, 30 (brightness 8 * index).
    assert out["frame_mask"].tolist() == [[1] * 4 + [0] * 8]
    assert torch.allclose(brightness(out["pixel_values_videos"])[0, :4], torch.tensor([0.0, 80, 160, 240]), atol=8)
    sliced = video_processor(max_frames=3)(videos=[path], return_tensors="pt")
    assert torch.allclose(brightness(sliced["pixel_values_videos"])[0], torch.tensor([0.0, 80, 240]), atol=8)
    exact = video_processor(max_frames=4, frame_sampling="xpool")(videos=[path], return_tensors="pt")
    # Middles of [0, 8), [8, 17), [17, 26), [26, 35): frames 3, 12, 21, 30.
    assert torch.allclose(brightness(exact["pixel_values_videos"])[0], torch.tensor([24.0, 96, 168, 240]), atol=8)


def test_h264_file_and_a_batch_of_files(tmp_path):
    first = write_video(str(tmp_path / "a.mp4"), num_frames=20, fps=10, codec="libx264")
    second = write_video(str(tmp_path / "b.mp4"), num_frames=50, fps=10)
    out = video_processor(max_frames=4)(videos=[first, second], return_tensors="pt")
    assert out["frame_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]  # 2 s -> 2 frames; 5 s -> 5 sliced to 4


def test_missing_video_file_names_the_file(tmp_path):
    missing = str(tmp_path / "nowhere.mp4")
    with pytest.raises(FileNotFoundError, match="nowhere.mp4"):
        video_processor()(videos=[missing])


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "text"])
def test_corrupt_video_file_names_the_file(tmp_path, damage):
    path = tmp_path / f"{damage}.mp4"
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("this is not a video\n")
    else:
        whole = write_video(str(tmp_path / "whole.mp4"), num_frames=30, fps=10)
        data = open(whole, "rb").read()
        path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{damage}.mp4"):
        video_processor()(videos=[str(path)])


def test_invalid_policy_values_name_the_field():
    with pytest.raises(ValueError, match="frame_sampling"):
        video_processor(frame_sampling="random")
    with pytest.raises(ValueError, match="slice_framepos"):
        video_processor(slice_framepos="middle")
    with pytest.raises(ValueError, match="max_frames"):
        video_processor(max_frames=0)


def test_unsampled_video_longer_than_max_frames_is_an_error():
    with pytest.raises(ValueError, match="max_frames"):
        video_processor(max_frames=4)(videos=[numbered_frames(6)], do_sample_frames=False)


# --- S2CAProcessor ---------------------------------------------------------------------------------------------------


def test_processor_returns_exactly_the_model_inputs(processor):
    out = processor(text=["the dog", "a cat"], videos=[numbered_frames(3), numbered_frames(9)], return_tensors="pt")
    forward_args = set(inspect.signature(S2CAModel.forward).parameters) - {
        "self",
        "return_loss",
        "return_dict",
        "kwargs",
    }
    assert set(out.keys()) == forward_args
    assert out["frame_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer))).eval()
    with torch.no_grad():
        logits = model(**out).logits_per_text
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_captions_are_truncated_with_end_of_text_kept(processor):
    bos, eos = processor.tokenizer.bos_token_id, processor.tokenizer.eos_token_id
    out = processor(text=["a very long caption " * 20, "", "the dog"], return_tensors="pt")
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape[1] == 16  # max_text_length
    assert ids[0, 0] == bos and ids[0, -1] == eos and mask[0].all()
    assert ids[1, :2].tolist() == [bos, eos] and mask[1].tolist() == [1, 1] + [0] * 14  # empty caption
    assert ids[2, mask[2].sum() - 1] == eos
    assert processor(text="the dog", max_length=4)["input_ids"][0][-1] == eos


def test_processor_needs_text_or_videos(processor):
    with pytest.raises(ValueError, match="text"):
        processor()
    with pytest.raises(TypeError, match="string"):
        processor(text=[1, 2])


def test_processor_save_and_load_round_trip(processor, tmp_path):
    processor.video_processor.frame_sampling = "xpool"
    processor.save_pretrained(tmp_path / "saved")
    loaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    assert isinstance(loaded, S2CAProcessor) and isinstance(loaded.video_processor, S2CAVideoProcessor)
    assert loaded.max_text_length == 16
    assert loaded.video_processor.frame_sampling == "xpool" and loaded.video_processor.max_frames == 4
    texts, videos = ["the dog", "a cat runs"], [numbered_frames(7), numbered_frames(2)]
    a = processor(text=texts, videos=videos, return_tensors="pt")
    b = loaded(text=texts, videos=videos, return_tensors="pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    processor.video_processor.save_pretrained(tmp_path / "video")
    video_only = AutoVideoProcessor.from_pretrained(tmp_path / "video")
    assert isinstance(video_only, S2CAVideoProcessor) and video_only.frame_sampling == "xpool"


def test_processor_from_clip_folder(processor, tmp_path):
    processor.tokenizer.save_pretrained(tmp_path / "clip")  # a CLIP checkpoint folder holds its tokenizer
    from_clip = S2CAProcessor.from_clip(str(tmp_path / "clip"), max_text_length=8, max_frames=6)
    assert isinstance(from_clip.video_processor, S2CAVideoProcessor) and from_clip.video_processor.max_frames == 6
    assert from_clip.video_processor.crop_size == {"height": 224, "width": 224}
    out = from_clip(text=["the dog"], videos=[numbered_frames(3, 224, 224)], return_tensors="pt")
    assert out["input_ids"].tolist() == processor(text=["the dog"], return_tensors="pt")["input_ids"].tolist()
    assert out["frame_mask"].tolist() == [[1, 1, 1, 0, 0, 0]]


def test_float_frames_in_0_1_equal_uint8_and_bad_ranges_are_named(tmp_path):
    # Float frames in [0, 1] used to be divided by 255 a second time and came out black.
    processor = tiny_processor(str(tmp_path / "tok")).video_processor
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    reference = processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
    for as_float in (frames.astype(np.float32) / 255.0, frames.astype(np.float32)):
        converted = processor(videos=[as_float], return_tensors="pt")["pixel_values_videos"]
        assert torch.allclose(converted, reference, atol=1e-4)
    too_bright = frames.astype(np.int32) * 3
    nan = np.full(frames.shape, np.nan, dtype=np.float32)
    for bad, message in ((too_bright, r"Video 1 .* \[0, 765\]"), (nan, "Video 1 .*NaN")):
        with pytest.raises(ValueError, match=message):
            processor(videos=[frames, bad], return_tensors="pt")


@pytest.mark.parametrize(
    ("videos", "message"),
    [
        ([], "empty"),
        ([b"\x00\x00\x00 ftypisom"], "Video 0 .* bytes"),
        ([np.zeros((2, 4, 32, 32, 3), dtype=np.uint8)], r"Video 0 .*shape \(2, 4, 32, 32, 3\)"),
        ([np.zeros((4, 32, 32, 3), dtype=np.uint8), np.zeros((32, 32), dtype=np.uint8)], r"Video 1 .*\(32, 32\)"),
        ([np.zeros((4, 32, 32, 4), dtype=np.uint8)], "RGBA"),
    ],
)
def test_malformed_video_inputs_are_named_with_the_expected_shapes(tmp_path, videos, message):
    processor = tiny_processor(str(tmp_path / "tok")).video_processor
    with pytest.raises(ValueError, match=message) as error:
        processor(videos=videos, return_tensors="pt")
    assert "num_frames" in str(error.value) or "RGBA" in str(error.value)
    # a batch given as one 5-D array is still a batch
    batch = processor(videos=np.zeros((2, 4, 32, 32, 3), dtype=np.uint8), return_tensors="pt")
    assert batch["pixel_values_videos"].shape == (2, 4, 3, IMAGE_SIZE, IMAGE_SIZE)


def test_v5_video_kwargs_map_onto_the_frame_policy_or_are_refused(tmp_path):
    processor = tiny_processor(str(tmp_path / "tok"), max_frames=4)
    path = write_video(str(tmp_path / "clip.mp4"), num_frames=50, fps=10)  # frame i has brightness 8 * (i % 32)

    def pixels(**kwargs):
        return processor(videos=[path], return_tensors="pt", **kwargs)["pixel_values_videos"]

    assert torch.equal(pixels(num_frames=2), pixels(max_frames=2))
    assert processor(videos=[path], num_frames=2, return_tensors="pt")["frame_mask"].tolist() == [[1, 1]]
    assert torch.equal(pixels(fps=2), pixels(sample_fps=2)) and not torch.equal(pixels(fps=2), pixels())
    for bad, message in [
        (dict(fps=1.5), "whole number of frames per second"),
        (dict(num_frames=0), "integer >= 1"),
        (dict(num_frames=2, max_frames=3), "disagree"),
        (dict(do_pad=False), "`do_pad` is not an option"),
        (dict(fps=2, frame_sampling="xpool"), "no meaning"),
    ]:
        with pytest.raises(ValueError, match=message):
            pixels(**bad)


def test_tokenizer_arguments_reach_the_tokenizer_with_or_without_videos(tmp_path):
    processor = tiny_processor(str(tmp_path / "tok"), max_text_length=16)
    path = write_video(str(tmp_path / "clip.mp4"), num_frames=20, fps=10)
    alone = processor(text=["a dog"], padding="max_length", return_tensors="pt")
    together = processor(text=["a dog"], videos=[path], padding="max_length", return_tensors="pt")
    assert alone["input_ids"].shape == together["input_ids"].shape == (1, 16)
    assert processor(text=["a dog"], return_tensors="pt")["input_ids"].shape[1] < 16
    with pytest.raises(ValueError, match="apply to `text`"):
        processor(videos=[path], padding="max_length")


def test_videos_given_as_urls_are_fetched_and_a_dead_url_is_named(tmp_path):
    import functools
    import http.server
    import threading

    from helpers import free_port

    processor = tiny_processor(str(tmp_path / "tok"), max_frames=4)
    folder = tmp_path / "served"
    folder.mkdir()
    path = write_video(str(folder / "clip.mp4"), num_frames=30, fps=10)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
        fetched = processor(videos=[url], return_tensors="pt")
        local = processor(videos=[path], return_tensors="pt")
        assert torch.equal(fetched["pixel_values_videos"], local["pixel_values_videos"])
        missing = f"http://127.0.0.1:{server.server_address[1]}/nothing.mp4"
        with pytest.raises(ValueError, match="Could not fetch video .*nothing.mp4"):
            processor(videos=[missing])
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="Could not fetch video"):
        processor(videos=[f"http://127.0.0.1:{free_port()}/clip.mp4"])  # nothing listens there

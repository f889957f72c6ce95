"""Media from elsewhere (a URL, an upload, a shared folder) never makes the decoder read another file, and a fetch
ends: playlists and file lists are refused whatever their name, a download has a size cap and a total deadline,
and its temporary folder is gone on every way out. Local HTTP servers on 127.0.0.1."""

import functools
import glob
import http.server
import os
import tempfile
import threading
import time

import numpy as np
import pytest
from helpers import free_port

from s2ca_hf import video_processing_s2ca
from s2ca_hf.tiny import tiny_processor
from s2ca_hf.video_io import VideoDecodeError, encode_frames, read_frames, write_video


av = pytest.importorskip("av")


@pytest.fixture
def secret(tmp_path):
    """A private local video (all frames one bright grey) that no playlist may make us decode."""
    path = str(tmp_path / "private" / "secret.ts")
    os.makedirs(os.path.dirname(path))
    encode_frames(path, (np.full((48, 48, 3), 200, np.uint8) for _ in range(10)), 10, "mpeg4")
    return path


def playlists(secret: str) -> dict[str, str]:
    return {
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret}\n#EXT-X-ENDLIST\n",
        "concat": f"ffconcat version 1.0\nfile {secret}\n",
    }


def test_plain_ffmpeg_would_read_the_local_file_through_a_playlist(tmp_path, secret):
    # The premise: without the safe set of demuxers, FFmpeg follows the playlist to the private file.
    path = tmp_path / "list.m3u8"
    path.write_text(playlists(secret)["hls"])
    with av.open(str(path)) as container:
        assert container.format.name == "hls" and sum(1 for _ in container.decode(video=0)) == 10


@pytest.mark.parametrize("kind", ["hls", "concat"])
@pytest.mark.parametrize("name", ["list.m3u8", "clip.mp4", "clip"])
def test_a_playlist_is_refused_whatever_its_name(tmp_path, secret, kind, name):
    path = tmp_path / name
    path.write_text(playlists(secret)[kind])
    with pytest.raises(VideoDecodeError, match="playlist or a list of files") as caught:
        read_frames(str(path))
    assert caught.value.path == str(path)


def test_the_demuxer_whitelist_alone_refuses_a_playlist(tmp_path, secret, monkeypatch):
    # The second line of defence: a playlist the first-bytes check misses still finds no demuxer that opens it.
    from s2ca_hf import video_io

    monkeypatch.setattr(video_io, "PLAYLIST_MAGIC", (b"\xff\xff",))
    path = tmp_path / "list.m3u8"
    path.write_text(playlists(secret)["hls"])
    with pytest.raises(VideoDecodeError, match="not a video container this package reads"):
        read_frames(str(path))


CONTAINERS = {  # each extension of VIDEO_EXTENSIONS and a codec its container takes
    ".3gp": "mpeg4", ".avi": "mpeg4", ".flv": "flv", ".m2ts": "mpeg2video", ".m4v": "mpeg4", ".mkv": "mpeg4",
    ".mov": "mpeg4", ".mp4": "mpeg4", ".mpeg": "mpeg1video", ".mpg": "mpeg2video", ".mts": "mpeg2video",
    ".ogv": "libtheora", ".ts": "mpeg4", ".webm": "libvpx", ".wmv": "wmv2",
}  # fmt: skip


def test_every_container_of_the_video_extensions_still_opens(tmp_path):
    from s2ca_hf.video_io import VIDEO_EXTENSIONS

    assert set(CONTAINERS) == set(VIDEO_EXTENSIONS)
    opened = []
    for extension, codec in CONTAINERS.items():
        if codec not in av.codecs_available:
            continue  # this FFmpeg build cannot write it (it may still read it)
        path = write_video(str(tmp_path / f"a{extension}"), num_frames=12, fps=25, codec=codec)  # MPEG-1 takes 25
        assert read_frames(path).frame_mask.sum() >= 1, extension
        opened.append(extension)
    assert len(opened) >= 12, opened


class _Server:
    def __init__(self, handler):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def leftover_downloads() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "s2ca-video-*")))


def test_a_fetched_playlist_is_refused_and_named_by_its_url(tmp_path, secret):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "list.m3u8").write_text(playlists(secret)["hls"])
    (folder / "video.mp4").write_text(playlists(secret)["hls"])
    processor = tiny_processor(str(tmp_path / "tok"), max_frames=4)
    before = leftover_downloads()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with _Server(handler) as base:
        for name in ("list.m3u8", "video.mp4"):
            with pytest.raises(VideoDecodeError, match=f"{base}/{name}.*playlist"):
                processor(videos=[f"{base}/{name}"])
    assert leftover_downloads() == before


def test_a_download_past_the_size_cap_stops_with_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(video_processing_s2ca, "URL_MAX_BYTES", 100_000)

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # no Content-Length: only counting the bytes can stop it
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"\x00" * 65536)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    class Declared(Endless):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()

    before = leftover_downloads()
    for handler, message in ((Endless, "more than the 100000 bytes"), (Declared, "1000000000 bytes, more than")):
        with _Server(handler) as base:
            with pytest.raises(ValueError, match=f"Could not fetch video {base}/big.mp4: it .*{message}"):
                read = video_processing_s2ca._read_video_file
                read(f"{base}/big.mp4", None, None)
    assert leftover_downloads() == before


def test_a_dripping_server_is_cut_off_at_the_deadline(monkeypatch):
    monkeypatch.setattr(video_processing_s2ca, "URL_DEADLINE_S", 1.5)

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a byte every 0.2 s: no single read ever times out
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    before = leftover_downloads()
    with _Server(Drip) as base:
        started = time.monotonic()
        with pytest.raises(ValueError, match=r"took more than 1.5 s in all"):
            video_processing_s2ca._read_video_file(f"{base}/slow.mp4", None, None)
        assert time.monotonic() - started < 5
    assert leftover_downloads() == before

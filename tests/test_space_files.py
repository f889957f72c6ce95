"""The demo app serves the videos it shows and no other file: driven over HTTP on 127.0.0.1 (no browser), with a
secret next to the indexed videos and an index row that names a file that is not a video."""

import importlib.util
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port


REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["index_helpers"]
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None, reason="the demo app needs gradio (pip install -e '.[dev]')"
)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def call(base: str, api_name: str, *data) -> list:
    """One event of the app through Gradio's HTTP API: POST the inputs, read the outputs from the event stream."""
    request = urllib.request.Request(
        f"{base}/gradio_api/call/{api_name}",
        data=json.dumps({"data": list(data)}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{base}/gradio_api/call/{api_name}/{event_id}", timeout=60) as response:
        stream = response.read().decode()
    lines = stream.splitlines()
    for event, payload in zip(lines, lines[1:]):
        if event == "event: complete":
            return json.loads(payload.removeprefix("data: "))
    raise AssertionError(f"no result from {api_name}: {stream[-2000:]}")


def urls(value) -> list[str]:
    if isinstance(value, dict):
        return ([value["url"]] if isinstance(value.get("url"), str) else []) + [
            u for v in value.values() for u in urls(v)
        ]
    if isinstance(value, list):
        return [u for v in value for u in urls(v)]
    return []


@pytest.fixture
def app_module():
    sys.path.insert(0, str(REPO / "space"))
    import app

    yield app
    sys.path.remove(str(REPO / "space"))


def test_the_app_serves_the_shown_videos_and_nothing_beside_them(app_module, saved_model, video_folder, tmp_path):
    from s2ca_hf.retrieval.cli import index_main

    secret = video_folder / ".env"
    secret.write_text("TOKEN=do-not-serve")
    index = str(tmp_path / "index")
    assert index_main(["--model", saved_model, "--videos", str(video_folder), "--out", index]) == 0
    demo = app_module.Demo(index, saved_model, k=3)
    server = app_module.build_app(demo)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app_module.launch(server, "127.0.0.1", port, block=False)
    try:
        gallery, _, _ = call(base, "run_search", "the dog")
        shown = urls(gallery)
        assert len(shown) == 3
        indexed = {path.read_bytes() for path in video_folder.rglob("*.mp4")}
        for url in shown:
            status, body = get(url)
            assert status == 200 and body in indexed  # exactly an indexed video
        # Everything else is refused: the secret beside the videos, a video by its own path, a system file.
        for path in (secret, next(video_folder.rglob("*.mp4")), Path("/etc/passwd")):
            status, body = get(f"{base}/gradio_api/file={path}")
            assert status == 403 and b"do-not-serve" not in body, path
    finally:
        server.close()


def test_an_index_row_that_names_a_file_that_is_not_a_video_is_not_served(app_module, saved_model, video_folder):
    from s2ca_hf.retrieval.cli import index_main

    index = str(video_folder.parent / "index-rows")
    assert index_main(["--model", saved_model, "--videos", str(video_folder), "--out", index]) == 0
    demo = app_module.Demo(index, saved_model, k=2)
    secret = video_folder.parent / "secret.txt"
    secret.write_text("do-not-serve")
    disguised = video_folder.parent / "looks-like.mp4"
    disguised.symlink_to(secret)  # a video name that leads to another file
    assert demo.serve(0, str(secret)) is None
    assert demo.serve(1, str(disguised)) is None
    assert demo.serve(2, "/etc/passwd") is None
    video = next(video_folder.rglob("*.mp4"))
    served = demo.serve(3, str(video))
    assert Path(served).read_bytes() == video.read_bytes() and Path(served).parent.parent == Path(demo.served)


def test_an_upload_that_does_not_decode_gets_its_reason(app_module, saved_model, video_folder, tmp_path):
    import gradio as gr

    from s2ca_hf.retrieval.cli import index_main

    index = str(tmp_path / "index")
    assert index_main(["--model", saved_model, "--videos", str(video_folder), "--out", index]) == 0
    demo = app_module.Demo(index, saved_model)
    upload = tmp_path / "upload.mp4"
    upload.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 20)
    with pytest.raises(gr.Error, match="Could not decode video .*upload.mp4"):
        demo.rank_captions(str(upload), "a dog\na cat")


def test_the_server_address_comes_from_the_environment_a_space_sets(app_module, monkeypatch):
    launched = {}
    monkeypatch.setattr(app_module, "Demo", lambda *args, **kwargs: None)
    monkeypatch.setattr(app_module, "build_app", lambda demo: None)
    monkeypatch.setattr(app_module, "launch", lambda app, host, port: launched.update(host=host, port=port))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    app_module.main(["--index", "some-index"])
    assert launched == {"host": "0.0.0.0", "port": 7861}
    app_module.main(["--index", "some-index", "--host", "127.0.0.1"])  # a flag still wins
    assert launched["host"] == "127.0.0.1"

"""space/app.py in a real browser: a model trained on a tiny built-in corpus, the Space folder written by
space/build_space.py started as a Space starts it (`python app.py`, settings only from the environment), driven by
headless Chromium (Debian's, through Playwright: no browser is downloaded)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, tiny_corpus_and_clip


REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = [name for name in ("gradio", "playwright", "matplotlib") if importlib.util.find_spec(name) is None]
sys.path.insert(0, str(REPO / "space"))  # app.py and build_space.py
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"the demo app's test needs {MISSING} (pip install -e '.[dev]')"),
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)"),
]
NUM_VIDEOS = 24


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny corpus, a tiny CLIP pretrained on its frames, S2CA trained on it, and an index of its training clips."""
    import train

    from s2ca_hf.retrieval.cli import index_main

    root = tmp_path_factory.mktemp("space")
    corpus, clip = tiny_corpus_and_clip(root, NUM_VIDEOS, size=32, clip_epochs=4)
    train.main([
        "--clip", clip, "--data_dir", str(corpus), "--synthetic_num_videos", str(NUM_VIDEOS),
        "--frame_cache_dir", str(root / "frames"), "--max_frames", "4", "--num_concepts", "4",
        "--temporal_num_hidden_layers", "1", "--temporal_num_attention_heads", "2", "--learning_rate", "1e-3",
        "--per_device_train_batch_size", "8", "--max_steps", "120", "--eval_strategy", "no", "--clip_lr_scale", "1",
        "--align", "false", "--transform", "false", "--reconstruct", "false",
        "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(root / "run"),
    ])  # fmt: skip
    model = root / "run" / "final"
    index = root / "index"
    assert (
        index_main(["--model", str(model), "--videos", f"corpus:synthetic:{corpus}:train", "--out", str(index)]) == 0
    )
    return {"model": str(model), "index": str(index), "corpus": str(corpus)}


# Installed into the app's process (as sitecustomize): an import that the package or the app makes of a
# distribution that space/requirements.txt does not list fails there, as it would on a Space.
IMPORT_GUARD = """
import importlib.metadata, os, re, sys
_required = {re.sub(r"[-_.]+", "-", name).lower() for name in os.environ["S2CA_TEST_REQUIREMENTS"].split(",")}
_allowed = {module for module, dists in importlib.metadata.packages_distributions().items()
            if any(re.sub(r"[-_.]+", "-", d).lower() in _required for d in dists)}

class _SpaceRequirementsGuard:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in _allowed or top in ("s2ca_hf", "app", "sitecustomize"):
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen")):
            frame = frame.f_back
        caller = frame.f_globals.get("__name__", "") if frame is not None else ""
        if caller in ("__main__", "app") or caller.partition(".")[0] == "s2ca_hf":
            with open(os.environ["S2CA_TEST_GUARD_LOG"], "a") as log:
                log.write(f"{name} imported by {caller}\\n")
            raise ImportError(f"{name} (imported by {caller}) is not in the Space's requirements.txt")
        return None

sys.meta_path.insert(0, _SpaceRequirementsGuard())
"""


def _requirements(path: Path) -> dict[str, str]:
    """{distribution: specifier} of a requirements file."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(re.match(r"([A-Za-z0-9_.-]+)(.*)", line).groups() for line in lines if line)


@pytest.fixture(scope="module")
def space(trained, tmp_path_factory):
    """The Space folder as build_space.py writes it, started with what a Space gives it: GRADIO_SERVER_NAME=0.0.0.0,
    a port, the variable S2CA_MODEL and no flags (the model here is a local folder: no Hub to load it from)."""
    import build_space

    root = tmp_path_factory.mktemp("space-run")
    folder = Path(build_space.build_space(str(root / "space")))
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(IMPORT_GUARD)
    port = free_port()
    environment = {
        "PATH": os.environ["PATH"],
        "HOME": str(root / "home"),
        "GRADIO_SERVER_NAME": "0.0.0.0",
        "GRADIO_SERVER_PORT": str(port),
        "SPACE_ID": "org/s2ca-search",
        "S2CA_MODEL": trained["model"],
        # This machine has no internet: nothing may try it (a Space would have it).
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": str(guard),
        "S2CA_TEST_REQUIREMENTS": ",".join(_requirements(folder / "requirements.txt")),
        "S2CA_TEST_GUARD_LOG": str(root / "guard.log"),
        "TQDM_DISABLE": "1",
    }
    log = open(root / "app.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=environment, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300  # first start: generate and index the example collection
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the Space did not start:\n{(root / 'app.log').read_text()[-3000:]}") from None
            time.sleep(1)
    yield {"url": url, "folder": folder, "log": root / "app.log", "guard_log": root / "guard.log"}
    process.terminate()
    process.wait(timeout=30)


def test_the_space_builds_its_examples_and_a_click_on_a_hit_shows_its_concept_map(space, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    examples = json.loads((space["folder"] / "examples" / "examples.json").read_text())
    assert examples["queries"], "the example collection has no example query"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(space["url"])
        page.get_by_role("heading", name="S2CA text-video search").wait_for(timeout=30_000)
        # An example query fills the text box; each was checked on first start to rank its clip first.
        page.get_by_text(examples["queries"][0], exact=True).first.click()
        expect(page.get_by_label("Text query")).to_have_value(examples["queries"][0])
        page.get_by_role("button", name="Search").click()
        results = page.locator("#results")
        first = results.locator(".caption-label").first
        first.wait_for(timeout=60_000)
        caption = first.inner_text()
        assert re.fullmatch(r"1\. video\d+\.mp4 · \d+%", caption), caption
        page.wait_for_function(
            "() => document.querySelector('#results .caption-label')?.title.includes('logit')", timeout=10_000
        )
        assert re.fullmatch(r"score -?\d+\.\d{4} · logit -?\d+\.\d\d \(scale \d+\.\d\)", first.get_attribute("title"))
        assert not page.locator("#concept-map img").count()
        results.locator("button.thumbnail-item, .thumbnail-item").first.click()
        page.locator("#concept-map img").first.wait_for(timeout=120_000)
        source = page.locator("#concept-map img").first.get_attribute("src")
        screenshot = os.environ.get("S2CA_SPACE_SCREENSHOT", str(tmp_path / "space.png"))
        page.screenshot(path=screenshot, full_page=True)
        image = urllib.request.urlopen(source if source.startswith("http") else space["url"] + source.lstrip("/"))
        assert image.read()[:4] == b"\x89PNG"
        browser.close()
    assert not space["guard_log"].exists(), space["guard_log"].read_text()


def test_the_space_folder_runs_its_own_copy_of_the_package(space):
    found = subprocess.run(
        [sys.executable, "-c", "import s2ca_hf; print(s2ca_hf.__file__)"], cwd=space["folder"], capture_output=True,
        text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(found).parent == space["folder"] / "s2ca_hf"
    assert (space["folder"] / "s2ca_hf" / "modeling_s2ca.py").read_bytes() == (
        REPO / "s2ca_hf" / "modeling_s2ca.py"
    ).read_bytes()


def test_the_space_requirements_keep_the_packages_bounds():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {}
    for line in project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]:
        name, specifier = re.match(r"([A-Za-z0-9_.-]+)(.*)", line).groups()
        declared.setdefault(name, specifier)
    required = _requirements(REPO / "space" / "requirements.txt")
    for name in project["dependencies"]:  # the package's own dependencies, all of them
        assert re.match(r"[A-Za-z0-9_.-]+", name).group() in required
    assert {name: spec for name, spec in required.items()} == {name: declared[name] for name in required}


def test_build_space_names_the_model_and_pushes_a_gradio_space(tmp_path, monkeypatch):
    import build_space
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://huggingface.co/spaces/{repo_id}"

        def add_space_variable(self, repo_id, key, value):
            calls.append(("add_space_variable", repo_id, key, value))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "space"
    assert build_space.main(["--out", str(out), "--model", "org/s2ca-msrvtt", "--push-to-hub", "org/s2ca-search"]) == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "\nmodels:\n- org/s2ca-msrvtt\n---\n" in card and "sdk: gradio" in card
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "app.py", "requirements.txt", "s2ca_hf"]
    assert calls[0] == ("create_repo", "org/s2ca-search", {"repo_type": "space", "space_sdk": "gradio",
                                                          "private": False, "exist_ok": True})  # fmt: skip
    assert calls[1] == ("add_space_variable", "org/s2ca-search", "S2CA_MODEL", "org/s2ca-msrvtt")
    assert calls[2][1]["folder_path"] == str(out) and calls[2][1]["repo_type"] == "space"
    with pytest.raises(SystemExit):
        build_space.main(["--out", str(out), "--push_to_hub", "org/s2ca-search"])  # which model?
    with pytest.raises(SystemExit):
        build_space.main(["--out", str(out), "--model", str(tmp_path)])  # a local folder cannot load on a Space


def test_the_demo_ranks_captions_and_explains_a_hit(trained):
    import app

    demo = app.Demo(trained["index"], trained["model"])
    hits = demo.hits("a red circle", k=2)
    assert len(hits) == 2 and hits[0][1].startswith("1. ")
    shares = [int(re.search(r"(\d+)%$", caption).group(1)) for _, caption, _ in hits]
    assert shares[0] >= shares[1] and 99 <= sum(shares) <= 101  # a softmax over the shown hits, rounded
    rows = demo.rank_captions(hits[0][0], "a red circle\na blue square\n\n")
    assert [row[0] for row in rows] == [1, 2] and [row[2] for row in rows] != [] and rows[0][1].endswith("%")
    assert int(rows[0][1][:-1]) >= int(rows[1][1][:-1])
    assert Path(demo.explain("a red circle", hits[0][0])).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(Exception, match="Type a text"):
        demo.search("  ")

"""End to end over HTTP: export a trained tiny model with `push_to_hub.py --dry_run`, serve the folder as a git repo
from olah (a Hub-compatible server) on 127.0.0.1, and load it in a process that cannot import s2ca_hf, exactly as a
user loads `org/s2ca-msrvtt` from the Hub.

olah runs from a virtual environment of its own (its dependencies stay out of the project's). It is installed from
PyPI on first use into pytest's cache folder (`.pytest_cache/d/`), or taken from `$S2CA_OLAH_CLI`. Only 127.0.0.1
is contacted once it is installed.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import push_to_hub
import pytest
import torch
from helpers import free_port, numbered_frames
from hub_helpers import EXPORTED_FILES, save_trained_tiny_model, sha256_of, write_results

from s2ca_hf import S2CAModel, S2CAProcessor, VideoTextRetrievalPipeline
from s2ca_hf.video_io import write_video


OLAH_VERSION = "0.5.4"  # the version whose offline mode this test was written against
INSTALL_TIMEOUT_S = 600
START_TIMEOUT_S = 60
REPO_ID = "org/s2ca-msrvtt"
TEXTS = ["the dog", "a cat runs fast", "the cat"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def olah_cli(request, tmp_path_factory) -> str:
    explicit = os.environ.get("S2CA_OLAH_CLI")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"$S2CA_OLAH_CLI={explicit} is not an executable")
        return explicit
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir(f"olah-{OLAH_VERSION}") if cache is not None else tmp_path_factory.mktemp("olah-install")
    venv, done = Path(root) / "venv", Path(root) / "installed"
    cli = venv / "bin" / "olah-cli"
    if not (done.is_file() and cli.is_file()):
        # A half-finished install (killed run, network error) is thrown away rather than trusted.
        shutil.rmtree(venv, ignore_errors=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", f"olah=={OLAH_VERSION}"],
                check=True,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        except subprocess.CalledProcessError as error:
            output = (error.stderr or "")[-3000:]
            pytest.fail(f"Could not install olah=={OLAH_VERSION} from PyPI into {venv}:\n{output}")
        except subprocess.TimeoutExpired:
            pytest.fail(f"Installing olah=={OLAH_VERSION} into {venv} took more than {INSTALL_TIMEOUT_S} s")
        done.write_text(OLAH_VERSION)
    return str(cli)


def http_status(url: str) -> int | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy
    try:
        with opener.open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@contextlib.contextmanager
def olah_server(cli: str, root: Path, mirrors: Path, ready: str = f"/api/models/{REPO_ID}/revision/main"):
    """Runs olah in offline mirror mode on 127.0.0.1 and stops it by its process id on exit, whatever happened.
    It is up once `ready` (a path of a repository in `mirrors`) answers 200."""
    port = free_port()
    config = root / "olah_offline.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [basic]
            host = "127.0.0.1"
            port = {port}
            repos-path = "{root / "olah-cache"}"
            mirrors-path = ["{mirrors}"]
            mirror-scheme = "http"
            mirror-netloc = "127.0.0.1:{port}"
            mirror-lfs-netloc = "127.0.0.1:{port}"
            [accessibility]
            offline = true
            """
        )
    )
    log_path = root / "olah.log"
    with open(log_path, "w") as log:
        # Its own session, so the stop below reaches any worker it starts; cwd=root because it writes ./logs there.
        server = subprocess.Popen(
            [cli, "-c", str(config)], cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while http_status(f"{endpoint}{ready}") != 200:
            if server.poll() is not None:
                pytest.fail(f"olah exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                log_tail = log_path.read_text()[-3000:]
                pytest.fail(f"olah did not serve {ready} within {START_TIMEOUT_S} s:\n{log_tail}")
            time.sleep(0.5)
        yield endpoint, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def git_commit(folder: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "s2ca", "GIT_AUTHOR_EMAIL": "s2ca@localhost"}
    env.update(GIT_COMMITTER_NAME="s2ca", GIT_COMMITTER_EMAIL="s2ca@localhost")
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Upload S2CA model"]):
        subprocess.run(["git", *command], cwd=folder, check=True, env=env, capture_output=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=folder, check=True, capture_output=True, text=True
    ).stdout.strip()


# Loads the model the way the card tells users to, from the server, where s2ca_hf does not exist.
CHILD = textwrap.dedent(
    """
    import json, sys
    sys.modules["s2ca_hf"] = None
    import numpy as np, torch
    from huggingface_hub import ModelCard, hf_hub_download
    from transformers import AutoModel, AutoProcessor, pipeline

    repo_id, revision, work = sys.argv[1], sys.argv[2], sys.argv[3]
    spec = json.load(open(f"{work}/spec.json"))
    frames = np.load(spec["frames"])
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True, revision=revision).eval()
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True, revision=revision)
    pipe = pipeline(model=repo_id, trust_remote_code=True, revision=revision)
    modules = [type(obj).__module__ for obj in (model, processor, processor.video_processor, pipe)]
    inputs = processor(text=spec["texts"], videos=[frames, spec["video"]], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        video = model.get_video_features(inputs["pixel_values_videos"], inputs["frame_mask"]).pooler_output
    card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision=revision))
    torch.save({"inputs": dict(inputs), "text_embeds": text, "video_embeds": video, "logits": out.logits_per_text,
                "texts_for_video": pipe(spec["video"], candidate_labels=spec["texts"]),
                "videos_for_text": pipe(spec["texts"][0], videos=[spec["video"], frames]),
                "modules": modules, "library_name": card.data.library_name}, f"{work}/remote.pt")
    """
)


def test_a_published_folder_loads_from_a_hub_compatible_server(olah_cli, tmp_path):
    trained = save_trained_tiny_model(tmp_path / "runs" / "tiny" / "final")
    results = write_results(tmp_path / "msrvtt_test.json", sha256_of(trained / "model.safetensors"))

    # 1. Export with --dry_run straight into the server's mirror layout, <mirrors>/models/<org>/<name>.
    mirrors = tmp_path / "mirrors"
    repo = mirrors / "models" / REPO_ID
    argv = ["--model", str(trained), "--repo_id", REPO_ID, "--results", str(results), "--dry_run", str(repo)]
    push_to_hub.main(argv)
    assert {path.name for path in repo.iterdir()} == EXPORTED_FILES
    revision = git_commit(repo)  # olah serves committed trees only

    # 2. What the local model (s2ca_hf, in this process) gives.
    model, processor = S2CAModel.from_pretrained(trained).eval(), S2CAProcessor.from_pretrained(trained)
    frames = numbered_frames(6)
    video_path = write_video(str(tmp_path / "clip.mp4"), num_frames=25, fps=10)
    inputs = processor(text=TEXTS, videos=[frames, video_path], return_tensors="pt")
    with torch.inference_mode():
        expected = model(**inputs)
    local_pipe = VideoTextRetrievalPipeline(model=model, processor=processor)
    np.save(tmp_path / "frames.npy", frames)
    (tmp_path / "spec.json").write_text(
        json.dumps({"texts": TEXTS, "frames": str(tmp_path / "frames.npy"), "video": video_path})
    )

    # 3. A fresh process with HF_ENDPOINT on the server and an empty cache loads it by repo id and commit.
    with olah_server(olah_cli, tmp_path, mirrors) as (endpoint, server):
        # Offline switches, cache locations and tokens of the caller would bypass or confuse the server.
        dropped = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"}
        env = {key: value for key, value in os.environ.items() if key not in dropped}
        env.update(
            HF_ENDPOINT=endpoint,
            HF_HOME=str(tmp_path / "hf_home"),
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        child = subprocess.run(
            [sys.executable, "-c", CHILD, REPO_ID, revision, str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert child.returncode == 0, child.stderr[-4000:]
        assert server.poll() is None  # still serving: every file came from it
    assert server.poll() is not None  # and stopped by its pid afterwards

    remote = torch.load(tmp_path / "remote.pt", weights_only=False)
    assert all(module.startswith("transformers_modules.org.") for module in remote["modules"]), remote["modules"]
    snapshot = tmp_path / "hf_home" / "hub" / "models--org--s2ca-msrvtt" / "snapshots" / revision
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "pipeline_s2ca.py").is_file()
    assert remote["library_name"] == "transformers"
    for key, value in inputs.items():
        assert torch.equal(remote["inputs"][key], value), key
    assert torch.equal(remote["text_embeds"], expected.text_embeds)
    assert torch.equal(remote["video_embeds"], expected.video_embeds)
    assert torch.equal(remote["logits"], expected.logits_per_text)
    assert remote["texts_for_video"] == local_pipe(video_path, candidate_labels=TEXTS)
    assert remote["videos_for_text"] == local_pipe(TEXTS[0], videos=[video_path, frames])

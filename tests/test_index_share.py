"""Sharing an index (`s2ca_hf.retrieval.share`): an index folder to a `datasets.Dataset` and back, to a dataset
repository and back through a Hub-compatible server, with the model and the data checked on the way in."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from index_helpers import NUM_VIDEOS, TEXTS, assert_same_index, index_model_config
from test_hub_server import olah_cli  # noqa: F401  (a fixture)

from s2ca_hf import S2CAModel
from s2ca_hf.retrieval import share
from s2ca_hf.retrieval.errors import ModelMismatchError, VideoIndexError
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.store import read_manifest
from s2ca_hf.tiny import tiny_processor


# The fixtures saved_model, video_folder and built, shared with the other index test modules.
pytest_plugins = ["index_helpers"]

av = pytest.importorskip("av")
datasets = pytest.importorskip("datasets")

DATASET_REPO = "org/s2ca-index"


@pytest.fixture(scope="module")
def dataset(built):
    return VideoIndex.load(built[0], device="cpu").to_dataset()


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A model of the same architecture as `saved_model` with other weights."""
    folder = tmp_path_factory.mktemp("other-model")
    torch.manual_seed(1)
    processor = tiny_processor(str(folder))
    S2CAModel(index_model_config(len(processor.tokenizer))).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def search_results(path, queries):
    """(ids, scores) of every query against the index at `path`: texts with the manifest's model, or vectors."""
    index = VideoIndex.load(path, device="cpu")
    hits = index.search(queries, k=NUM_VIDEOS)
    return [[(hit.id, hit.score, hit.path) for hit in query_hits] for query_hits in hits]


def test_the_dataset_holds_the_rows_and_the_stored_vectors(built, dataset):
    out, _ = built
    index = VideoIndex.load(out, device="cpu")
    assert len(dataset) == NUM_VIDEOS
    assert dataset["id"] == index.ids and dataset["path"] == index.table.column("path").to_pylist()
    assert {"id", "path", "start", "end", "duration", "psi"} <= set(dataset.column_names)
    assert dataset.features["psi"] == datasets.List(datasets.Value("float16"), length=index.dimension)
    psi = torch.tensor(dataset.with_format("numpy")[:]["psi"])
    assert torch.equal(psi, torch.cat(list(index.iter_shards())))  # bit for bit the stored float16
    metadata = json.loads(dataset.info.description)
    assert metadata["format"] == share.SHARE_FORMAT
    assert metadata["manifest"]["model"] == read_manifest(out)["model"]
    assert [entry["id"] for shard in metadata["shards"] for entry in shard["skipped"]] == ["broken.mp4"]


def test_dataset_round_trip_gives_the_same_index_and_the_same_search(built, dataset, saved_model, tmp_path):
    out, _ = built
    # Through save_to_disk too: the metadata lives in the dataset's info and survives it.
    dataset.save_to_disk(str(tmp_path / "saved"))
    reloaded = datasets.load_from_disk(str(tmp_path / "saved"))
    copy = VideoIndex.from_dataset(reloaded, tmp_path / "copy", model=saved_model)
    assert copy.path == str(tmp_path / "copy")

    assert_same_index(out, copy.path)
    original, restored = read_manifest(out), read_manifest(copy.path)
    assert restored["content_id"] == original["content_id"]  # the same shards, so the same row order
    assert [s["count"] for s in restored["shards"]] == [s["count"] for s in original["shards"]]
    for key in ("model", "frame_policy", "source", "text", "encoding_dtype", "skipped", "count"):
        assert restored[key] == original[key], key
    assert restored["shared_from"]["content_id"] == original["content_id"]

    # Search works unchanged: the same ids, scores and paths, from texts (the model named in the manifest) and
    # from query vectors.
    assert search_results(copy.path, TEXTS) == search_results(out, TEXTS)
    queries = torch.randn(4, VideoIndex.load(out).dimension, generator=torch.Generator().manual_seed(0))
    assert search_results(copy.path, queries) == search_results(out, queries)


def test_a_dataset_made_with_another_model_is_refused_naming_both(dataset, saved_model, other_model, tmp_path):
    with pytest.raises(ModelMismatchError) as error:
        VideoIndex.from_dataset(dataset, tmp_path / "copy", model=other_model)
    message = str(error.value)
    assert saved_model in message and other_model in message and "weights" in message
    assert not (tmp_path / "copy").exists()  # nothing is written

    loaded = S2CAModel.from_pretrained(other_model)  # a model object, not only a folder
    with pytest.raises(ModelMismatchError, match="weights"):
        VideoIndex.from_dataset(dataset, tmp_path / "copy", model=loaded)
    with pytest.raises(ModelMismatchError, match="dimension"):
        fingerprint = {**json.loads(dataset.info.description)["manifest"]["model"], "dimension": 3}
        VideoIndex.from_dataset(dataset, tmp_path / "copy", model=fingerprint)

    # Without a model at load, the index refuses another model at search time as any index does.
    copy = VideoIndex.from_dataset(dataset, tmp_path / "unchecked")
    with pytest.raises(ModelMismatchError, match="weights"):
        copy.load_model(other_model)


def _flip_first_value(batch):
    batch["psi"][0][0] = -batch["psi"][0][0] - 1.0
    return batch


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.remove_columns("psi"), "lacks the column(s) psi"),
        (lambda d: d.remove_columns(["id", "path"]), "lacks the column(s) id, path"),
        (lambda d: d.map(_flip_first_value, batched=True, batch_size=2), "column psi does not match the checksum"),
        (lambda d: d.map(lambda row: {"path": row["path"] + "x"}), "the rows (ids, paths, spans, ...) do not match"),
        (lambda d: d.map(lambda row: {"id": row["id"].upper()}), "the rows (ids, paths, spans, ...) do not match"),
        (lambda d: d.select(range(NUM_VIDEOS - 1)), "rows were added or removed"),
        (lambda d: d.cast_column("psi", datasets.List(datasets.Value("float32"))), "not lists of float16"),
    ],
)
def test_a_changed_or_incomplete_dataset_is_refused(dataset, tmp_path, change, message):
    changed = change(dataset)
    changed.info.description = dataset.info.description
    with pytest.raises(VideoIndexError) as error:
        VideoIndex.from_dataset(changed, tmp_path / "copy")
    assert message in str(error.value)
    assert not (tmp_path / "copy" / "manifest.json").exists()


def test_an_edited_manifest_is_refused(dataset, other_model, tmp_path):
    # The manifest names the model that search loads: an edited fingerprint would make search encode queries with
    # another model. It is under the export's checksums like the rows and the vectors.
    from s2ca_hf.retrieval.build import load_model_and_processor

    metadata = json.loads(dataset.info.description)
    metadata["manifest"]["model"] = load_model_and_processor(str(other_model))[2]
    edited = datasets.Dataset(dataset.data)
    edited.info.description = json.dumps(metadata)
    with pytest.raises(VideoIndexError, match="the index manifest .* does not match the checksum recorded at export"):
        VideoIndex.from_dataset(edited, tmp_path / "copy")
    assert not (tmp_path / "copy" / "manifest.json").exists()
    del metadata["manifest_sha256"]  # removed: refused too
    edited.info.description = json.dumps(metadata)
    with pytest.raises(VideoIndexError, match="does not match the checksum"):
        VideoIndex.from_dataset(edited, tmp_path / "copy")
    older = json.loads(dataset.info.description)  # an unchanged export from before the checksum (version 1)
    del older["manifest_sha256"]
    older["version"] = 1
    edited.info.description = json.dumps(older)
    VideoIndex.from_dataset(edited, tmp_path / "older")


def test_metadata_and_output_folder_are_checked(dataset, built, tmp_path):
    bare = datasets.Dataset(dataset.data)  # e.g. load_dataset of the parquet files: no metadata
    with pytest.raises(VideoIndexError, match="carries no S2CA index metadata.*from_hub"):
        VideoIndex.from_dataset(bare, tmp_path / "copy")

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(VideoIndexError, match="not empty"):
        VideoIndex.from_dataset(dataset, tmp_path / "busy")
    with pytest.raises(VideoIndexError, match="holds no index"):
        VideoIndex.from_dataset(dataset, tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"

    shutil.copytree(built[0], tmp_path / "existing")
    VideoIndex.from_dataset(dataset, tmp_path / "existing", overwrite=True)  # an index is replaced
    assert_same_index(built[0], str(tmp_path / "existing"))


def test_hub_folder_round_trip(built, tmp_path):
    out, _ = built
    index = VideoIndex.load(out, device="cpu")
    folder = share.save_hub_folder(index, tmp_path / "repo")
    names = sorted(os.listdir(folder))
    assert names == ["README.md", "data", share.SHARE_FILE]
    assert len(os.listdir(os.path.join(folder, "data"))) == len(index.manifest["shards"])
    card = (tmp_path / "repo" / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "path: data/*.parquet" in card

    # The parquet files alone are an ordinary dataset, as `load_dataset` would read them from the Hub.
    plain = datasets.load_dataset("parquet", data_files=os.path.join(folder, "data", "*.parquet"), split="train")
    assert plain["id"] == index.ids

    copy = VideoIndex.from_dataset(share.load_hub_folder(folder), tmp_path / "copy")
    assert_same_index(out, copy.path)
    assert search_results(copy.path, TEXTS) == search_results(out, TEXTS)


def test_many_shards_and_an_empty_index_round_trip(built, saved_model, tmp_path):
    from s2ca_hf.retrieval.cli import index_main

    _, folder = built
    out = str(tmp_path / "one-per-shard")
    # One video per shard: seven shards in an order of their own, one of them holding only the skipped broken.mp4.
    assert index_main(["--model", saved_model, "--videos", str(folder), "--out", out, "--shard-size", "1"]) == 0
    index = VideoIndex.load(out, device="cpu")
    assert len(index.manifest["shards"]) == NUM_VIDEOS + 1 and len(index) == NUM_VIDEOS
    for copy in (
        VideoIndex.from_dataset(index.to_dataset(), tmp_path / "copy"),
        VideoIndex.from_dataset(
            share.load_hub_folder(share.save_hub_folder(index, tmp_path / "repo")), tmp_path / "c2"
        ),
    ):
        assert read_manifest(copy.path)["content_id"] == index.manifest["content_id"]
        assert copy.ids == index.ids
        assert search_results(copy.path, TEXTS) == search_results(out, TEXTS)
    assert len(os.listdir(tmp_path / "repo" / "data")) == NUM_VIDEOS  # no parquet file for the skipped-only shard

    (tmp_path / "bad").mkdir()
    shutil.copy(folder / "broken.mp4", tmp_path / "bad")
    empty = str(tmp_path / "empty")
    assert index_main(["--model", saved_model, "--videos", str(tmp_path / "bad"), "--out", empty]) == 0
    index = VideoIndex.load(empty, device="cpu")
    for n, dataset in enumerate(
        (index.to_dataset(), share.load_hub_folder(share.save_hub_folder(index, tmp_path / "r")))
    ):
        copy = VideoIndex.from_dataset(dataset, tmp_path / f"empty-{n}", model=saved_model)
        assert len(copy) == 0 and read_manifest(copy.path)["skipped"] == index.manifest["skipped"]


class RecordingApi:
    """Stands in for `huggingface_hub.HfApi`: records the calls and the uploaded folder's files."""

    calls: list = []

    def __init__(self, endpoint=None, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        RecordingApi.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, repo_id, repo_type, folder_path, **kwargs):
        walked = os.walk(folder_path)
        files = sorted(
            os.path.relpath(os.path.join(root, name), folder_path) for root, _, names in walked for name in names
        )
        RecordingApi.calls.append(("upload_folder", repo_id, repo_type, files, kwargs))
        return "commit"


def test_index_command_pushes_to_the_hub(built, saved_model, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    from s2ca_hf.retrieval.cli import index_main

    out, folder = built
    copy = tmp_path / "idx"
    shutil.copytree(out, copy)
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    argv = ["--model", saved_model, "--videos", str(folder), "--out", str(copy), "--quiet"]
    assert index_main([*argv, "--push-to-hub", DATASET_REPO]) == 0  # resumes (nothing to encode), then pushes
    assert f"pushed to the dataset repository {DATASET_REPO}" in capsys.readouterr().out
    (create, upload) = RecordingApi.calls
    assert create[:2] == ("create_repo", DATASET_REPO) and create[2]["repo_type"] == "dataset"
    shards = len(read_manifest(copy)["shards"])
    expected = ["README.md", *[f"data/shard-{i:05d}.parquet" for i in range(shards)], share.SHARE_FILE]
    assert upload[1:4] == (DATASET_REPO, "dataset", expected)
    RecordingApi.calls = []
    assert index_main(argv) == 0 and RecordingApi.calls == []  # no push unless asked


# --- through a Hub-compatible server -------------------------------------------------------------------------------

# Loads the index by repo id from the server in a fresh process (HF_ENDPOINT and an empty cache), and searches it.
CHILD = textwrap.dedent(
    """
    import json, sys
    from s2ca_hf.retrieval.index import VideoIndex
    repo_id, revision, out, model, texts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    index = VideoIndex.from_hub(repo_id, out, revision=revision, model=model)
    hits = VideoIndex.load(out, device="cpu").search(texts, k=len(index))
    print(json.dumps([[[h.id, h.score, h.path] for h in query] for query in hits]))
    """
)


class MirrorUploadApi:
    """Stands in for `huggingface_hub.HfApi` in `push_to_hub`: the upload lands in the server's mirror folder as a
    git commit (olah serves committed trees, and takes no uploads)."""

    mirrors = None
    calls: list = []

    def __init__(self, endpoint=None, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        MirrorUploadApi.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, repo_id, repo_type, folder_path, **kwargs):
        from test_hub_server import git_commit

        MirrorUploadApi.calls.append(("upload_folder", repo_id, repo_type, sorted(os.listdir(folder_path)), kwargs))
        target = MirrorUploadApi.mirrors / f"{repo_type}s" / repo_id
        shutil.copytree(folder_path, target)
        return git_commit(target)


@pytest.mark.slow
def test_push_to_hub_and_load_from_a_hub_compatible_server(
    built, saved_model, other_model, request, tmp_path, monkeypatch
):
    import huggingface_hub
    from test_hub_server import olah_server

    out, _ = built
    mirrors = tmp_path / "mirrors"
    MirrorUploadApi.mirrors, MirrorUploadApi.calls = mirrors, []
    monkeypatch.setattr(huggingface_hub, "HfApi", MirrorUploadApi)
    revision = VideoIndex.load(out, device="cpu").push_to_hub(DATASET_REPO, private=True)
    (create, upload) = MirrorUploadApi.calls
    assert create == ("create_repo", DATASET_REPO, {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert upload[:4] == ("upload_folder", DATASET_REPO, "dataset", ["README.md", "data", share.SHARE_FILE])

    dropped = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    with olah_server(
        request.getfixturevalue("olah_cli"), tmp_path, mirrors, ready=f"/api/datasets/{DATASET_REPO}/revision/main"
    ) as (
        endpoint,
        server,
    ):
        env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), NO_PROXY="127.0.0.1,localhost")
        env.update(no_proxy="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1", HF_DATASETS_OFFLINE="0")

        def load(target, model):
            argv = [DATASET_REPO, revision, str(tmp_path / target), model, json.dumps(TEXTS)]
            return subprocess.run(
                [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env, timeout=300
            )

        child = load("from-hub", saved_model)
        assert child.returncode == 0, child.stderr[-4000:]
        refused = load("refused", other_model)
        assert server.poll() is None
    assert refused.returncode != 0 and "ModelMismatchError" in refused.stderr
    assert saved_model in refused.stderr and other_model in refused.stderr
    assert not (tmp_path / "refused" / "manifest.json").exists()

    assert_same_index(out, str(tmp_path / "from-hub"))
    expected = search_results(out, TEXTS)
    assert [[tuple(hit) for hit in query] for query in json.loads(child.stdout)] == expected
    snapshot = tmp_path / "hf_home" / "hub" / "datasets--org--s2ca-index" / "snapshots" / revision
    assert (snapshot / share.SHARE_FILE).is_file()

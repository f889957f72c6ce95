"""training/push_to_hub.py: the exported folder, the parity check (parity.py), the model card (model_card.py), the
results files it accepts (results.py) and what would be uploaded.

The upload itself cannot be tested against the live Hub here: `HfApi` is replaced by a recorder, and the tests check
every call and argument up to it (and the folder handed to it).
"""

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import model_card
import parity
import push_to_hub
import pytest
import results as results_file
import torch
from hub_helpers import EXPORTED_FILES, METRICS, save_trained_tiny_model, sha256_of, write_results
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from s2ca_hf import S2CAModel, S2CAProcessor


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return save_trained_tiny_model(tmp_path_factory.mktemp("run") / "final")


@pytest.fixture(scope="module")
def dry_run(trained, tmp_path_factory):
    """One dry-run export with a results file, shared by the read-only checks below."""
    work = tmp_path_factory.mktemp("dry")
    results = write_results(work / "msrvtt_test.json", sha256_of(trained / "model.safetensors"))
    out = work / "org--s2ca-msrvtt"
    summary = push_to_hub.main(
        ["--model", str(trained), "--repo_id", "org/s2ca-msrvtt", "--results", str(results), "--dry_run", str(out)]
    )
    return out, summary


@pytest.fixture
def loaded(trained):
    return S2CAModel.from_pretrained(trained).eval(), S2CAProcessor.from_pretrained(trained)


class RecordingHfApi:
    """Stands in for `huggingface_hub.HfApi`: records every call, and what the uploaded folder held at that time."""

    instances: list["RecordingHfApi"] = []

    def __init__(self, tags=()):
        self.calls = []
        self.tags = list(tags)
        self.uploaded = None
        RecordingHfApi.instances.append(self)

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def list_repo_refs(self, repo_id, **kwargs):
        self.calls.append(("list_repo_refs", repo_id, kwargs))
        return SimpleNamespace(tags=[SimpleNamespace(name=tag) for tag in self.tags], branches=[])

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {path.name: path.read_bytes() for path in folder.iterdir()}
        pr_url = "https://huggingface.co/org/s2ca-msrvtt/discussions/1" if kwargs.get("create_pr") else None
        return SimpleNamespace(
            oid="a" * 40, commit_url="https://hub/commit", pr_url=pr_url, commit_message=kwargs["commit_message"]
        )

    def create_tag(self, repo_id, **kwargs):
        self.calls.append(("create_tag", repo_id, kwargs))


@pytest.fixture
def recording_api(monkeypatch):
    RecordingHfApi.instances = []
    monkeypatch.setattr(push_to_hub, "HfApi", RecordingHfApi)
    return RecordingHfApi.instances


# --- the folder ------------------------------------------------------------------------------------------------------


def test_dry_run_writes_exactly_the_repository_files(dry_run, trained):
    out, summary = dry_run
    assert {path.name for path in out.iterdir()} == EXPORTED_FILES
    assert set(summary["files"]) == EXPORTED_FILES
    # The evaluated weights are published byte for byte, so results files keyed on their sha256 apply.
    assert summary["sha256"] == sha256_of(out / "model.safetensors") == sha256_of(trained / "model.safetensors")
    assert summary["parity"] and all(diff == 0.0 for diff in summary["parity"].values())


def test_config_has_the_auto_map_and_the_custom_pipeline(dry_run):
    out, _ = dry_run
    config = json.loads((out / "config.json").read_text())
    auto_map = {"AutoConfig": "configuration_s2ca.S2CAConfig", "AutoModel": "modeling_s2ca.S2CAModel"}
    assert config["auto_map"] == auto_map
    assert config["custom_pipelines"] == {
        "video-text-retrieval": {
            "impl": "pipeline_s2ca.VideoTextRetrievalPipeline",
            "pt": ["AutoModel"],  # not "S2CAModel": transformers resolves these names on its own module
            "type": "multimodal",
        }
    }
    processor_config = json.loads((out / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_s2ca.S2CAProcessor"}
    assert processor_config["video_processor"]["auto_map"]["AutoVideoProcessor"] == (
        "video_processing_s2ca.S2CAVideoProcessor"
    )


def test_exported_code_imports_only_torch_transformers_torchvision_numpy_and_itself(dry_run):
    out, _ = dry_run
    code_files = sorted(out.glob("*.py"))
    assert {path.name for path in code_files} == {name for name in EXPORTED_FILES if name.endswith(".py")}
    for path in code_files:
        third_party = set(get_imports(str(path))) - set(sys.stdlib_module_names)
        # numpy is a dependency of transformers itself; PyAV is imported only where a file is decoded, in a try.
        assert third_party <= {"torch", "transformers", "torchvision", "numpy"}, (path.name, third_party)
        for module in get_relative_imports(str(path)):
            assert (out / f"{module}.py").is_file(), (path.name, module)


def test_the_dry_run_card_carries_the_results(dry_run):
    out, _ = dry_run
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag is None
    values = {(r.task_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert values[("text-to-video-retrieval", "R@1")] == METRICS["R@1"]
    assert values[("video-to-text-retrieval", "R@1")] == 43.2
    assert values[("text-to-video-retrieval", "R@1 (DSL)")] == 49.5
    assert "exactly." in card.text  # the parity statement reports the check that ran


def test_an_existing_folder_is_never_mixed_into(loaded, tmp_path):
    model, processor = loaded
    (tmp_path / "stale.bin").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="not empty"):
        push_to_hub.write_repo_folder(model, processor, tmp_path)


def test_the_evaluated_weights_file_is_published_when_it_holds_the_same_tensors(trained, tmp_path):
    # Another serialisation of the same tensors (other metadata): results name this file's hash, so it is kept.
    source = tmp_path / "run"
    shutil.copytree(trained, source)
    tensors = load_file(trained / "model.safetensors")
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt", "note": "saved by another tool"})
    model, processor = S2CAModel.from_pretrained(source).eval(), S2CAProcessor.from_pretrained(source)
    sha = push_to_hub.write_repo_folder(model, processor, tmp_path / "same", str(source))
    assert sha == sha256_of(source / "model.safetensors") != sha256_of(trained / "model.safetensors")
    # A file with other tensors (here one extra) is not the model being exported: the fresh save stays.
    weights = load_file(trained / "model.safetensors")
    save_file({**weights, "extra": torch.zeros(1)}, source / "model.safetensors", metadata={"format": "pt"})
    sha = push_to_hub.write_repo_folder(model, processor, tmp_path / "other", str(source))
    assert sha != sha256_of(source / "model.safetensors")
    assert set(load_file(tmp_path / "other" / "model.safetensors")) == set(weights)


# --- parity ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 6-8 s on 2 cores, as each test that runs the parity check: a fresh process imports transformers
def test_parity_check_fails_loudly_on_tampered_weights_and_nothing_is_uploaded(
    trained, tmp_path, monkeypatch, recording_api
):
    write = push_to_hub.write_repo_folder

    def write_then_tamper(model, processor, folder, source_dir=None):
        sha = write(model, processor, folder, source_dir)
        weights = load_file(folder / "model.safetensors")
        # A small change to the video projection: every video feature and logit moves, no text feature does.
        weights["visual_projection.weight"] = weights["visual_projection.weight"] * 1.01
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        return sha

    monkeypatch.setattr(push_to_hub, "write_repo_folder", write_then_tamper)
    with pytest.raises(parity.ParityError) as error:
        push_to_hub.main(["--model", str(trained), "--repo_id", "org/s2ca-msrvtt", "--card_dir", str(tmp_path)])
    message = str(error.value)
    assert "does not reproduce the in-memory model" in message and "Nothing was uploaded" in message
    assert "video_embeds: max |difference|" in message and "logits_per_text: max |difference|" in message
    # Only what the tampered tensor feeds differs: the processor's outputs and the text features are exact.
    assert "input_ids" not in message and "pixel_values_videos" not in message and "text_embeds" not in message
    assert all(api.calls == [] for api in recording_api)


@pytest.mark.slow  # a parity check: a fresh process
def test_parity_check_reports_a_folder_that_cannot_load(loaded, tmp_path):
    model, processor = loaded
    push_to_hub.write_repo_folder(model, processor, tmp_path / "out")
    # Remote code that needs the package is exactly what the check must catch.
    modeling = tmp_path / "out" / "modeling_s2ca.py"
    modeling.write_text("import s2ca_hf\n" + modeling.read_text())
    with pytest.raises(parity.ParityError, match="could not be loaded"):
        parity.check_parity(model, processor, tmp_path / "out")


def test_compare_outputs_names_every_difference():
    expected = {"a": torch.zeros(3), "b": torch.ones(2), "labels": ["x", "y"]}
    assert parity.compare_outputs(expected, dict(expected)) == {"a": 0.0, "b": 0.0}
    actual = {"a": torch.tensor([0.0, 1e-3, 0.0]), "b": torch.ones(3), "labels": ["y", "x"]}
    with pytest.raises(parity.ParityError) as error:
        parity.compare_outputs(expected, actual)
    assert "a: max |difference| = 0.001" in str(error.value)
    assert "b: shape (3,) != (2,)" in str(error.value) and "labels" in str(error.value)
    assert parity.compare_outputs(expected, {**actual, "b": torch.ones(2), "labels": ["x", "y"]}, atol=1e-2)
    with pytest.raises(parity.ParityError, match="nan"):
        parity.compare_outputs(expected, {**expected, "a": torch.full((3,), float("nan"))}, atol=1.0)


# --- the card --------------------------------------------------------------------------------------------------------


def test_card_renders_results_from_a_results_file(loaded, trained, tmp_path):
    model, processor = loaded
    sha = sha256_of(trained / "model.safetensors")
    results = results_file.load_results(write_results(tmp_path / "msrvtt_test.json", sha))
    card = model_card.render_model_card(
        model, processor, "org/s2ca-msrvtt", sha, [results], base_model="openai/clip-vit-base-patch32"
    )
    reparsed = ModelCard(str(card))  # what the Hub will parse
    entries = {(r.task_type, r.metric_name): r for r in reparsed.data.eval_results}
    for key, value in METRICS.items():
        if key != "std_rank":
            assert entries[("text-to-video-retrieval", key)].metric_value == value
    assert entries[("video-to-text-retrieval", "MnR")].metric_value == 12.7
    dsl = entries[("text-to-video-retrieval", "R@1 (DSL)")]
    assert dsl.metric_value == 49.5 and dsl.metric_config == "dsl"
    assert entries[("text-to-video-retrieval", "R@1")].dataset_split == "test"
    # The corpus key is named in the text; only Hub ids go into the metadata, which the Hub links.
    assert reparsed.data.datasets is None and reparsed.data.base_model == "openai/clip-vit-base-patch32"
    assert "Data: MSR-VTT." in reparsed.text
    assert reparsed.data.library_name == "transformers" and reparsed.data.license == "apache-2.0"
    text = reparsed.text
    assert "| text-to-video | 44.1 | 71.0 | 80.9 | 95.0 | 2 | 15.3 |" in text
    assert "| video-to-text | 43.2 | 71.0 | 80.9 | 95.0 | 2 | 12.7 |" in text
    assert "| text-to-video + DSL (post-processed) | 49.5 |" in text
    assert "1000 texts against 1000 videos (one caption per video)" in text and "`train_csv=9k`" in text
    assert "unevaluated" not in text
    # The usage snippet pins a revision and trusts remote code; the citation and the reconstruction note are there.
    assert 'repo_id, revision = "org/s2ca-msrvtt", "v0.1.0"' in text
    assert "trust_remote_code=True, revision=revision" in text
    assert "reconstruction" in text and "10.1016/j.neucom.2024.128851" in text and "Neurocomputing" in text


def test_card_links_only_hub_ids(loaded, tmp_path):
    model, processor = loaded
    local = tmp_path / "my-clip"
    local.mkdir()
    card = model_card.render_model_card(
        model, processor, "org/s2ca", "0" * 64, [], base_model=str(local), datasets=["synthetic", "org/my-videos"]
    )
    reparsed = ModelCard(str(card))
    assert reparsed.data.base_model is None and reparsed.data.datasets == ["org/my-videos"]
    assert f"Initialised from a local CLIP checkpoint (`{local}`), not on the Hub." in reparsed.text
    assert "huggingface.co/" + str(local) not in reparsed.text
    assert "the s2ca-hf built-in synthetic corpus" in reparsed.text
    assert "spaces/" not in reparsed.text  # no demo Space given: none linked


def test_card_links_the_demo_space(loaded, tmp_path):
    model, processor = loaded
    card = model_card.render_model_card(model, processor, "org/s2ca", "0" * 64, [], space="org/s2ca-search")
    assert "[org/s2ca-search](https://huggingface.co/spaces/org/s2ca-search)" in " ".join(str(card).split())
    with pytest.raises(ValueError, match="not a Hub id"):
        model_card.render_model_card(model, processor, "org/s2ca", "0" * 64, [], space=str(tmp_path))


def test_card_without_results_says_the_model_is_unevaluated(loaded, tmp_path):
    model, processor = loaded
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("learning_rate: 0.01\nmax_steps: 2\n")
    card = model_card.render_model_card(model, processor, "org/s2ca-tiny", "0" * 64, [], recipe_path=str(recipe))
    reparsed = ModelCard(str(card))
    assert reparsed.data.eval_results is None and "model-index" not in str(card)
    assert "**This model is unevaluated.**" in reparsed.text
    assert "| R@1 |" not in reparsed.text and "None: this model has not been evaluated" in reparsed.text
    assert "```yaml\nlearning_rate: 0.01\nmax_steps: 2\n```" in reparsed.text


def test_card_rejects_a_results_file_for_another_model(loaded, trained, tmp_path):
    model, processor = loaded
    other = results_file.load_results(write_results(tmp_path / "other.json", "f" * 64))
    with pytest.raises(results_file.ResultsError, match="is for another model") as error:
        model_card.render_model_card(model, processor, "org/x", sha256_of(trained / "model.safetensors"), [other])
    assert "f" * 64 in str(error.value) and "other.json" in str(error.value)


def test_main_rejects_a_results_file_for_another_model_before_uploading(trained, tmp_path, recording_api):
    results = write_results(tmp_path / "other.json", "e" * 64)
    with pytest.raises(results_file.ResultsError, match="is for another model"):
        push_to_hub.main(["--model", str(trained), "--repo_id", "org/s2ca-msrvtt", "--results", str(results)])
    assert all(api.calls == [] for api in recording_api)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metrics": {"text_to_video": METRICS}}, "metrics.video_to_text"),
        ({"metrics": {"text_to_video": {**METRICS, "R@5": "71"}, "video_to_text": METRICS}}, "R@5"),
        ({"metrics": {"text_to_video": {**METRICS, "MdR": float("nan")}, "video_to_text": METRICS}}, "finite"),
        ({"model": {"name_or_path": "x"}}, "model.sha256"),
        ({"model": {"sha256": "not-hex"}}, "64 hex digits"),
        ({"counts": {"texts": 10}}, "counts.videos"),
    ],
)
def test_malformed_results_files_name_the_field(tmp_path, change, message):
    path = write_results(tmp_path / "bad.json", "0" * 64, **change)
    with pytest.raises(results_file.ResultsError, match=message):
        results_file.load_results(path)


def test_results_file_not_found_or_not_json(tmp_path):
    with pytest.raises(results_file.ResultsError, match="not found"):
        results_file.load_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(results_file.ResultsError, match="not valid JSON"):
        results_file.load_results(tmp_path / "bad.json")


# --- what would be uploaded ------------------------------------------------------------------------------------------


@pytest.mark.slow  # a full export with its parity check: a fresh process
def test_upload_sends_one_commit_of_the_checked_folder_and_tags_it(trained, tmp_path, recording_api):
    results = write_results(tmp_path / "msrvtt_test.json", sha256_of(trained / "model.safetensors"))
    argv = ["--model", str(trained), "--repo_id", "org/s2ca-msrvtt", "--results", str(results), "--tag", "v1.0"]
    argv += ["--create_pr", "--private", "--revision", "release", "--card_dir", str(tmp_path / "cards")]
    summary = push_to_hub.main(argv)
    (api,) = recording_api
    assert [call[0] for call in api.calls] == [
        "create_repo",
        "list_repo_refs",
        "create_branch",
        "upload_folder",
        "create_tag",
    ]
    assert all(call[1] == "org/s2ca-msrvtt" for call in api.calls)
    assert api.calls[0][2] == {"repo_type": "model", "private": True, "exist_ok": True}
    assert api.calls[2][2]["branch"] == "release"
    upload = api.calls[3][2]
    assert upload["create_pr"] is True and upload["revision"] == "release" and upload["repo_type"] == "model"
    assert set(api.uploaded) == EXPORTED_FILES
    assert api.uploaded["model.safetensors"] == (trained / "model.safetensors").read_bytes()
    card = api.uploaded["README.md"].decode()
    assert '"org/s2ca-msrvtt", "v1.0"' in card and "| text-to-video | 44.1 |" in card
    assert api.calls[4][2]["tag"] == "v1.0" and api.calls[4][2]["revision"] == "a" * 40
    # The published card is kept, and the temporary folder is gone.
    assert Path(summary["card"]) == tmp_path / "cards" / "org--s2ca-msrvtt.md"
    assert Path(summary["card"]).read_text() == card
    assert summary["commit"] == "a" * 40 and summary["pr_url"].endswith("/discussions/1")
    assert not Path(summary["folder"]).exists()


def test_upload_refuses_an_existing_tag_before_committing(tmp_path):
    api = RecordingHfApi(tags=["v0.1.0"])
    with pytest.raises(SystemExit, match="already has a tag 'v0.1.0'"):
        push_to_hub.upload(tmp_path, "org/s2ca-msrvtt", tag="v0.1.0", api=api)
    assert "upload_folder" not in [call[0] for call in api.calls]
    api = RecordingHfApi(tags=["v0.0.9"])
    push_to_hub.upload(tmp_path, "org/s2ca-msrvtt", tag="v0.1.0", api=api)
    assert [call[0] for call in api.calls] == ["create_repo", "list_repo_refs", "upload_folder", "create_tag"]
    assert api.calls[2][2]["revision"] is None and api.calls[2][2]["create_pr"] is False


def test_bad_arguments_are_refused(trained, capsys):
    for argv, message in [
        (["--model", str(trained), "--repo_id", "s2ca-msrvtt"], "org/name"),
        (["--model", str(trained), "--repo_id", "org/x", "--recipe", "missing.yaml"], "no such file"),
    ]:
        with pytest.raises(SystemExit):
            push_to_hub.main(argv)
        assert message in capsys.readouterr().err

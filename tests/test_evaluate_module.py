"""The `evaluate` module returns the function's numbers, offline, and loads where s2ca_hf cannot be imported."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import evaluate
import numpy as np
from evaluate.loading import get_imports
from helpers import WITHOUT_S2CA

from s2ca_hf.retrieval import metrics as retrieval_metrics_module
from s2ca_hf.retrieval import retrieval_metrics


MODULE = Path(__file__).resolve().parents[1] / "metrics" / "text_video_retrieval"


def similarities():
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(12, 5)).round(1)  # rounded: ties, so that the two tie rules differ
    references = np.r_[np.arange(5), rng.integers(0, 5, 7)]  # multi-caption: 12 texts, 5 videos
    return sim, references


# Content positives: every text also fits the next video.
POSITIVES = [sorted({int(video), (int(video) + 1) % 5}) for video in similarities()[1]]
CASES = (
    {},
    {"ties": "clip4clip"},
    {"video_to_text": "ce"},
    {"post_processing": "dsl"},
    {"ks": [1, 3]},
    {"positives": POSITIVES},
    {"positives": POSITIVES, "video_to_text": "ce", "ties": "clip4clip"},
)


def test_evaluate_load_gives_the_functions_numbers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(MODULE))
    sim, references = similarities()
    for kwargs in CASES:
        via_evaluate = metric.compute(predictions=sim.tolist(), references=references.tolist(), **kwargs)
        direct = retrieval_metrics(sim, references, **{**kwargs, "ks": tuple(kwargs.get("ks", (1, 5, 10, 50)))})
        assert via_evaluate == direct, kwargs
    # add_batch then compute, as a streaming evaluation would.
    for row, reference in zip(sim, references):
        metric.add(predictions=row.tolist(), references=int(reference))
    assert metric.compute() == retrieval_metrics(sim, references)
    # Positives are a keyword of compute, for all the rows added.
    metric.add_batch(predictions=sim.tolist(), references=references.tolist())
    streamed = metric.compute(positives=POSITIVES)
    assert streamed == retrieval_metrics(sim, references, positives=POSITIVES)
    assert streamed["protocol"]["positives"] == "content"
    assert streamed["text_to_video"] != retrieval_metrics(sim, references)["text_to_video"]


def test_the_documented_positives_example(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(MODULE))
    predictions, references = [[0.9, 0.1], [0.8, 0.2]], [0, 1]
    assert metric.compute(predictions=predictions, references=references)["text_to_video"]["R@1"] == 50.0
    with_positives = metric.compute(predictions=predictions, references=references, positives=[[0], [0, 1]])
    assert with_positives["text_to_video"]["R@1"] == 100.0
    mask = metric.compute(predictions=predictions, references=references, positives=[[True, False], [True, True]])
    assert mask == with_positives
    script = (MODULE / "text_video_retrieval.py").read_text()
    readme = (MODULE / "README.md").read_text()
    assert "positives=[[0], [0, 1]]" in script and "positives=[[0], [0, 1]]" in readme


def test_the_module_runs_the_packages_own_metric_file():
    # One implementation: the module's metric file is a link to s2ca_hf/retrieval/metrics.py, not a copy.
    linked = MODULE / "retrieval_metrics.py"
    assert linked.is_symlink(), "metrics/text_video_retrieval/retrieval_metrics.py must link to the package's file"
    assert linked.resolve() == Path(retrieval_metrics_module.__file__).resolve()
    # evaluate copies the script's relative imports but not theirs: the file may import only libraries.
    imports = get_imports(str(linked))
    assert [i for i in imports if i[0] != "library"] == []
    assert {name for _, name, _, _ in imports} - set(sys.stdlib_module_names) <= {"numpy", "torch"}


def test_module_script_is_named_like_its_folder_and_imports_one_per_line():
    script = MODULE / "text_video_retrieval.py"
    assert script.is_file() and (MODULE / "README.md").is_file()
    for line in script.read_text().splitlines():
        if line.startswith("import "):
            assert "," not in line, line  # evaluate's import scanner breaks on "import a, b"
    third_party = {name for kind, name, _, _ in get_imports(str(script)) if kind == "library"}
    assert third_party - set(sys.stdlib_module_names) <= {"datasets", "evaluate", "numpy"}


def test_the_module_loads_in_a_process_that_cannot_import_s2ca_hf(tmp_path):
    # From the repository folder (the link) and from a copy with the link resolved, which is what
    # `huggingface_hub.upload_folder` uploads: both load without s2ca_hf, and give the package's numbers.
    uploaded = tmp_path / "uploaded" / "text_video_retrieval"
    shutil.copytree(MODULE, uploaded)  # follows symbolic links
    assert not (uploaded / "retrieval_metrics.py").is_symlink()
    sim, references = similarities()
    np.save(tmp_path / "sim.npy", sim)
    np.save(tmp_path / "references.npy", references)
    child = WITHOUT_S2CA + textwrap.dedent(
        f"""
        import json
        import evaluate, numpy as np
        sim, references = np.load("sim.npy"), np.load("references.npy")
        results = {{}}
        for folder in ({str(MODULE)!r}, {str(uploaded)!r}):
            metric = evaluate.load(folder)
            results[folder] = [
                metric.compute(predictions=sim.tolist(), references=references.tolist(), **kwargs)
                for kwargs in {list(CASES)!r}
            ]
        assert not any(name == "s2ca_hf" or name.startswith("s2ca_hf.") for name in sys.modules if sys.modules[name])
        json.dump(results, open("results.json", "w"))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == [str(MODULE), str(uploaded)]
    for computed in results.values():
        for kwargs, value in zip(CASES, computed, strict=True):
            expected = retrieval_metrics(sim, references, **{**kwargs, "ks": tuple(kwargs.get("ks", (1, 5, 10, 50)))})
            assert value == json.loads(json.dumps(expected)), kwargs

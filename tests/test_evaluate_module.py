"""The `evaluate` module returns the function's numbers, offline."""

from pathlib import Path

import evaluate
import numpy as np

from s2ca_hf.retrieval import retrieval_metrics


MODULE = Path(__file__).resolve().parents[1] / "metrics" / "text_video_retrieval"


def test_evaluate_load_gives_the_functions_numbers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(MODULE))
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(12, 5))
    references = np.r_[np.arange(5), rng.integers(0, 5, 7)]  # multi-caption: 12 texts, 5 videos
    for kwargs in ({}, {"ties": "clip4clip"}, {"video_to_text": "ce"}, {"post_processing": "dsl"}):
        via_evaluate = metric.compute(predictions=sim.tolist(), references=references.tolist(), **kwargs)
        direct = retrieval_metrics(sim, references, **kwargs)
        assert via_evaluate == direct, kwargs
    # add_batch then compute, as a streaming evaluation would.
    for row, reference in zip(sim, references):
        metric.add(predictions=row.tolist(), references=int(reference))
    assert metric.compute() == retrieval_metrics(sim, references)


def test_module_script_is_named_like_its_folder_and_imports_one_per_line():
    script = MODULE / "text_video_retrieval.py"
    assert script.is_file() and (MODULE / "README.md").is_file()
    for line in script.read_text().splitlines():
        if line.startswith("import "):
            assert "," not in line, line  # evaluate's import scanner breaks on "import a, b"

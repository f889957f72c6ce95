"""benchmarks/figures.py: the figures beside the results tables, drawn from the results files."""

from pathlib import Path

import figures
import pytest
import render_readme


pytest.importorskip("matplotlib")
REPO = Path(__file__).resolve().parents[1]


def recall(r1: float) -> dict:
    return {"R@1": r1, "R@5": r1 + 10, "R@10": r1 + 20, "R@50": 100.0}


def concept_stats(counts: list[float], empty: float) -> dict:
    return {
        "text_tokens_per_concept": counts,
        "video_tokens_per_concept": [2 * c for c in counts],
        "text_empty_concept_rate": empty,
        "video_empty_concept_rate": empty / 2,
    }


def diagnosis_report() -> dict:
    def run(r1: float, counts: list[float] | None):
        metrics = {split: {"text_to_video": recall(r1 + i)} for i, split in enumerate(figures.SPLITS)}
        stats = concept_stats(counts, 0.5) if counts else {"text_tokens_per_concept": None}
        return {"metrics": metrics, "diagnostics": {"val": stats}}

    return {
        "rows": [
            {"variant": "reference", "runs": [run(40, None), run(50, None)]},
            {"variant": "soft", "runs": [run(60, [1.0, 3.0]), run(70, [2.0, 2.0])]},
        ]
    }


def accuracy_report() -> dict:
    rows = [
        {"method": "meanP", "split": split, "text_to_video": recall(30.0 + i)}
        for i, split in enumerate(figures.SPLITS)
    ]
    rows += [{"method": "S2CA", "split": "val", "text_to_video": recall(55.0)}]
    diagnostics = {"meanP / seed 0": {"val": {"text_tokens_per_concept": None}}}
    diagnostics["S2CA / seed 0"] = {"val": concept_stats([4.0, 0.0], 0.25)}
    return {"rows": rows, "diagnostics": diagnostics}


def test_recall_curves_are_means_over_seeds_for_both_layouts():
    curves = figures.recall_curves(diagnosis_report())
    assert curves["soft"]["val"] == [65.0, 75.0, 85.0, 100.0]
    assert curves["reference"]["compositional"] == [47.0, 57.0, 67.0, 100.0]
    curves = figures.recall_curves(accuracy_report())
    assert curves["meanP"]["test"] == [31.0, 41.0, 51.0, 100.0]
    assert list(curves["S2CA"]) == ["val"]


def test_concept_usage_leaves_out_methods_without_concepts():
    usage = figures.concept_usage(diagnosis_report())
    assert list(usage) == ["soft"]
    # Each run's counts become shares, fullest first, then are averaged: [0.75, 0.25] and [0.5, 0.5].
    assert usage["soft"]["spread"]["text"] == pytest.approx([0.625, 0.375])
    assert usage["soft"]["empty"] == (0.5, 0.25)
    usage = figures.concept_usage(accuracy_report())
    assert list(usage) == ["S2CA"] and usage["S2CA"]["spread"]["video"] == [1.0, 0.0]


def test_figures_are_written_deterministically_and_linked_from_the_readme(tmp_path):
    written = figures.write_figures(diagnosis_report(), "s2ca_diagnosis_round9", str(tmp_path))
    assert [Path(p).name for p in written] == [
        "s2ca_diagnosis_round9_recall.png",
        "s2ca_diagnosis_round9_concepts.png",
    ]
    first = [Path(p).read_bytes() for p in written]
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in first)
    figures.write_figures(diagnosis_report(), "s2ca_diagnosis_round9", str(tmp_path))
    assert [Path(p).read_bytes() for p in written] == first
    assert figures.write_figures({"seconds": 1.0, "metrics": {}}, "default_run", str(tmp_path)) == []


def test_every_committed_accuracy_and_diagnosis_file_has_its_figures():
    sources = figures.figure_sources(str(REPO / "benchmarks" / "results"))
    assert any(Path(source).parent.name == "diagnosis" for source in sources)  # the rounds, in their subfolder
    for source in sources:
        assert Path(source[: -len(".json")] + "_recall.png").is_file(), f"run python benchmarks/figures.py {source}"
    # The README shows one figure, the accuracy benchmark's R@K curves.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"](benchmarks/results/{render_readme.ACCURACY_FIGURE})" in readme


def test_the_default_run_shows_its_concept_map_when_it_has_one():
    import default_run

    metrics = {d: {c: 1.0 for c in default_run.COLUMNS} for d in ("text_to_video", "video_to_text")}
    report = {
        "date": "today", "machine": "m", "versions": {"torch": "x"}, "command": "c", "seconds": 60.0, "steps": 3,
        "evaluations": 1, "best_step": 3, "metrics": {s: metrics for s in figures.SPLITS},
        "clips": {s: 1 for s in figures.SPLITS},
    }  # fmt: skip
    assert "concept map" not in default_run.markdown(report)
    report["concept_map"] = {"video_id": "video7", "caption": "a red circle", "score": 0.5}
    assert "![concept map of video7](benchmarks/results/default_run_concept_map.png)" in default_run.markdown(report)

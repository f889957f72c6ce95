"""Every figure the README quotes is rendered from benchmarks/results/ by benchmarks/render_readme.py, never typed:
the README must be what the files give, and it renders only what it shows."""

import json
import re
from pathlib import Path

import render_readme


REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def accuracy_report(**extra) -> dict:
    def row(method: str, split: str, r1: float) -> dict:
        metrics = {"R@1": r1, "R@5": r1 + 10, "MnR": 2.0}
        return {
            "method": method,
            "split": split,
            "text_to_video": metrics,
            "text_to_video_std": {key: 0.5 for key in metrics},
            "video_to_text": metrics,
            "video_to_text_std": {key: 0.5 for key in metrics},
        }

    return {
        "date": "2026-12-02T10:00:00+00:00",
        "machine": "Some CPU, 2 cores",
        "versions": {"torch": "2.0"},
        "seeds": [0, 1],
        "command": "python benchmarks/accuracy.py --data_dir /bench/data/synthetic --out /bench/results",
        "rows": [row("meanP", "val", 60.0), row("meanP", "test", 40.0), row("S2CA (default)", "val", 61.25)],
        **extra,
    }


def test_the_readme_is_what_the_results_files_give():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert render_readme.render(readme, str(RESULTS)) == readme
    for marker in (render_readme.START, render_readme.RUN_START, render_readme.SEARCH_START):
        assert marker in readme
    for name in render_readme.RENDERED:
        assert (RESULTS / name).is_file(), name


def test_the_readme_renders_only_what_it_shows():
    """The README links the full reports instead of rendering them: no diagnosis round and no other report's table
    is pasted in, and it stays a user guide."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "s2ca_diagnosis_round" not in readme
    assert readme.count("](benchmarks/results/") == 1  # one figure
    assert len(readme.splitlines()) <= 520


def test_the_results_in_brief_are_rendered_from_accuracy_json(tmp_path):
    (tmp_path / "accuracy.json").write_text(json.dumps(accuracy_report()))
    (tmp_path / "accuracy_recall.png").write_bytes(b"\x89PNG")
    readme = f"intro\n{render_readme.START}\nold numbers\n{render_readme.END}\noutro\n"
    rendered = render_readme.render(readme, str(tmp_path))
    assert rendered.startswith("intro\n") and rendered.endswith("\noutro\n") and "old numbers" not in rendered
    assert "| method | val | test |" in rendered
    assert "| meanP | 60.0 ± 0.5 | 40.0 ± 0.5 |" in rendered and "| S2CA (default) | 61.2 ± 0.5 | – |" in rendered
    assert "accuracy_recall.png)" in rendered and "accuracy.md" in rendered
    # Paths of the benchmark machine become the repository's.
    assert "`python benchmarks/accuracy.py --data_dir data/synthetic --out benchmarks/results`" in rendered
    assert "/bench/" not in rendered


def test_figures_from_an_earlier_corpus_say_so():
    current = render_readme.current_corpus_format()
    note = render_readme.corpus_note({}, "benchmarks/accuracy.py")  # files from before `corpus_format` was recorded
    assert "previous built-in corpus (format 2" in note and f"now format {current}" in note
    assert "re-run of `benchmarks/accuracy.py`" in note
    note = render_readme.corpus_note({"corpus_format": current}, "benchmarks/accuracy.py")
    assert note == f"Measured on the built-in corpus of format {current}."
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in (render_readme.ACCURACY, render_readme.DEFAULT_RUN):
        report = json.loads((RESULTS / name).read_text(encoding="utf-8"))
        if report.get("corpus_format", render_readme.UNRECORDED_CORPUS_FORMAT) < current:
            assert readme.count("Measured on the previous built-in corpus") >= 1


def test_rendered_command_lines_carry_repository_relative_paths():
    command = (
        "python benchmarks/search.py --model /work/bench/runs/default-recipe/best "
        "--videos=/work/bench/data/synthetic/videos --out /work/bench/results10m"
    )
    assert render_readme.repository_command(command) == (
        "python benchmarks/search.py --model runs/default-recipe/best --videos=data/synthetic/videos "
        "--out benchmarks/results"
    )
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "/work/" not in readme


def test_the_default_run_is_rendered_from_its_results_file(tmp_path):
    metrics = {"R@1": 12.0, "R@5": 50.0, "MnR": 3.0}
    report = {
        "date": "2026-12-02T10:00:00+00:00", "machine": "m", "versions": {}, "command": "python x.py --out /a/b",
        "seconds": 123.0, "steps": 9, "evaluations": 3, "best_step": 6, "clips": {"val": 20},
        "metrics": {"val": {"text_to_video": metrics, "video_to_text": metrics}}, "load_average": "0.1 / 0.2",
    }  # fmt: skip
    (tmp_path / "default_run.json").write_text(json.dumps(report))
    readme = f"a\n{render_readme.RUN_START}\nstale 60.0\n{render_readme.RUN_END}\nb\n{render_readme.START}\n"
    rendered = render_readme.render(readme + f"{render_readme.END}\n", str(tmp_path))
    assert "stale 60.0" not in rendered and "**123 s in all**" in rendered and "(step 6)" in rendered
    assert "| val (20) | 12.0 | 50.0 | 3.0 | 12.0 | 50.0 | 3.0 |" in rendered
    assert "`python x.py --out benchmarks/results`" in rendered


def test_the_search_summary_is_rendered_from_search_json(tmp_path):
    report = {
        "date": "2026-12-02T10:00:00+00:00",
        "environment": {"cpu_model": "Some CPU", "cpu_count": 2},
        "load_average_1min": {"start": 0.1},
        "k": 10,
        "search": [
            {"backend": "exact", "vectors": 10000, "dimension": 8704, "latency_ms": 17.7, "queries_per_s": 485.4,
             "batch_queries": 64, "storage": "in memory, float32"},
        ],
        "two_stage": {"large": [
            {"collection": "generated (spectrum), 1,000,000 rows", "dimension": 1152, "disk_gib": 2.15,
             "recall_at_10": 0.9612, "queries_per_s_batch_1": 321.5, "queries_per_s_batch_64": 1234.5,
             "exact_queries_per_s": 3.21, "bytes_per_video": 40.0, "peak_rss_gib": 1.5, "candidates": 256,
             "nprobe": 128, "refine_k_factor": 8, "queries_per_s_batch_64_first_pass": 987.6},
            # faster, but below the recall target: not the headline
            {"collection": "generated (spectrum), 1,000,000 rows", "dimension": 1152, "disk_gib": 2.15,
             "recall_at_10": 0.8812, "queries_per_s_batch_1": 555.5, "queries_per_s_batch_64": 2222.2,
             "exact_queries_per_s": 3.21, "bytes_per_video": 40.0, "peak_rss_gib": 1.5, "candidates": 256,
             "nprobe": 32, "refine_k_factor": 8},
        ]},
    }  # fmt: skip
    (tmp_path / "search.json").write_text(json.dumps(report))
    readme = f"a\n{render_readme.SEARCH_START}\nstale 99 ms\n{render_readme.SEARCH_END}\nb\n"
    rendered = render_readme.render(readme + f"{render_readme.START}\n{render_readme.END}\n", str(tmp_path))
    assert "stale 99 ms" not in rendered
    for figure in ("17.7 ms", "485.4 queries/s", "recall@10 0.961", "321.5 queries/s", "1,234.5", "3.21", "40 bytes"):
        assert figure in rendered, figure
    assert "nprobe 128, refine x 8" in rendered and "2,222.2" not in rendered and "987.6 on the first pass" in rendered


def test_every_mean_and_std_quoted_by_hand_is_in_a_results_file():
    """The README's prose and the documents quote multi-seed results by hand ("70.7 ± 1.6"): each must be a figure
    that some results file holds, so that a typo or a number from nowhere fails here."""
    texts = [(REPO / "README.md").read_text(encoding="utf-8")]
    start, end = texts[0].index(render_readme.START), texts[0].index(render_readme.END)
    texts[0] = texts[0][:start] + texts[0][end:]
    texts += [path.read_text(encoding="utf-8") for path in sorted((REPO / "docs").glob("*.md"))]
    quoted = {q for text in texts for q in re.findall(r"\d+\.\d ± \d+\.\d", text)}
    files = "".join(path.read_text(encoding="utf-8") for path in RESULTS.rglob("*.md"))
    assert len(quoted) >= 10
    assert [q for q in sorted(quoted) if q not in files] == []

"""The README's Results section is generated from benchmarks/results/, never typed: it must match the files."""

from pathlib import Path

import render_readme


REPO = Path(__file__).resolve().parents[1]


def test_readme_results_section_matches_the_results_files():
    renderer = render_readme
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert renderer.render(readme, str(REPO / "benchmarks" / "results")) == readme
    for path in renderer.results_files(str(REPO / "benchmarks" / "results")):
        assert Path(path).name in readme  # every results file is shown, with its source


def test_renderer_replaces_only_the_marked_section(tmp_path):
    renderer = render_readme
    (tmp_path / "search.md").write_text("# Search\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = f"intro\n{renderer.START}\nold numbers\n{renderer.END}\noutro\n"
    rendered = renderer.render(readme, str(tmp_path))
    assert rendered.startswith("intro\n") and rendered.endswith("\noutro\n")
    assert "old numbers" not in rendered and "### Search" in rendered and "| 1 | 2 |" in rendered


def test_the_default_run_table_is_rendered_from_its_results_file(tmp_path):
    renderer = render_readme
    (tmp_path / "default_run.md").write_text("# The default run\n\n**123 s in all**\n")
    readme = f"intro\n{renderer.RUN_START}\nstale 60.0\n{renderer.RUN_END}\nmiddle\n{renderer.START}\n{renderer.END}\n"
    rendered = renderer.render(readme, str(tmp_path))
    assert "stale 60.0" not in rendered and "**123 s in all**" in rendered and "# The default run" not in rendered
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert renderer.RUN_START in readme and "benchmarks/results/default_run.md" in readme


def test_the_search_summary_is_rendered_from_search_json(tmp_path):
    import json

    renderer = render_readme
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
    readme = f"a\n{renderer.SEARCH_START}\nstale 99 ms\n{renderer.SEARCH_END}\nb\n{renderer.START}\n{renderer.END}\n"
    rendered = renderer.render(readme, str(tmp_path))
    assert "stale 99 ms" not in rendered
    for figure in ("17.7 ms", "485.4 queries/s", "recall@10 0.961", "321.5 queries/s", "1,234.5", "3.21", "40 bytes"):
        assert figure in rendered, figure
    assert "nprobe 128, refine x 8" in rendered and "2,222.2" not in rendered and "987.6 on the first pass" in rendered
    assert renderer.SEARCH_START in (REPO / "README.md").read_text(encoding="utf-8")


def test_every_mean_and_std_quoted_outside_results_is_in_a_results_file():
    """The method section quotes 3-seed results by hand ("70.7 ± 1.6"): each must be a figure some results file
    holds, so that a typo or a number from nowhere fails here."""
    import re

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(render_readme.START), readme.index(render_readme.END)
    quoted = set(re.findall(r"\d+\.\d ± \d+\.\d", readme[:start] + readme[end:]))
    results = REPO / "benchmarks" / "results"
    files = "".join(p.read_text(encoding="utf-8") for p in [*results.glob("*.md"), *results.glob("history/*.md")])
    assert len(quoted) >= 10
    assert [q for q in sorted(quoted) if q not in files] == []


def test_diagnosis_rounds_are_shown_in_numeric_order(tmp_path):
    for name in ("s2ca_diagnosis_round10.md", "s2ca_diagnosis_round2.md", "s2ca_diagnosis_round2_x.md", "accuracy.md"):
        (tmp_path / name).write_text("# t\n")
    names = [Path(p).name for p in render_readme.results_files(str(tmp_path))]
    assert names == [
        "accuracy.md",
        "s2ca_diagnosis_round2.md",
        "s2ca_diagnosis_round2_x.md",
        "s2ca_diagnosis_round10.md",
    ]

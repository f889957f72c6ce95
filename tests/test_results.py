"""training/results.py: the one Markdown metric table (as evaluation and training print it) and the writer's files
read back by the validator."""

import results as results_file
from hub_helpers import METRICS, write_results
from train import step_metrics_table


def test_the_table_has_one_row_per_block_and_direction_with_the_asked_columns_and_digits():
    blocks = {"test": {"text_to_video": METRICS, "video_to_text": {**METRICS, "R@1": 43.25}}}
    table = results_file.metrics_table(blocks, "split", keys=("R@1", "MdR"), digits=1).splitlines()
    assert table == [
        "| split | direction | R@1 | MdR |",
        "|---|---|---|---|",
        "| test | text to video | 44.1 | 2.0 |",
        "| test | video to text | 43.2 | 2.0 |",
    ]
    logged = step_metrics_table(blocks, 7)
    assert logged.startswith("\nRetrieval metrics at step 7:\n| split | direction | R@1 | R@5 | R@10 | MdR | MnR |")


def test_what_the_writer_writes_the_validator_accepts(tmp_path):
    results = results_file.load_results(write_results(tmp_path / "given.json", "a" * 64))
    results.pop("_path")
    results["command"] = "python training/evaluate_model.py ..."
    stem = results_file.write_results(results, tmp_path / "out")
    assert stem == str(tmp_path / "out" / "msrvtt-test")
    assert results_file.load_results(stem + ".json")["metrics"] == results["metrics"]
    markdown = (tmp_path / "out" / "msrvtt-test.md").read_text()
    assert markdown == results_file.results_markdown(results)
    assert "| plain | text to video | 44.10 |" in markdown
    assert "| dsl (post-processed) | text to video | 49.50 |" in markdown

"""benchmarks/accuracy.py end to end at tiny sizes: the rows, splits, seeds and statistics the issue asks for."""

import json
import statistics

import accuracy
import pretrain_clip
import pytest
import runs
import s2ca_diagnosis as diagnosis

from s2ca_hf.data.synthetic import ERROR_KINDS, QUERY_TYPES


TINY = ["--max_frames", "4", "--num_concepts", "4", "--temporal_num_hidden_layers", "1"]
TINY += ["--temporal_num_attention_heads", "2", "--report_to", "none", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def tiny_corpus_and_clip(tmp_path_factory):
    """A 24-clip corpus and a small CLIP pretrained on it (shared by the benchmark tests of this file)."""
    from s2ca_hf.data import generate_synthetic_corpus

    folder = tmp_path_factory.mktemp("tiny")
    corpus = generate_synthetic_corpus(
        folder / "corpus", num_videos=24, size=16, num_frames=8, fps=2, captions_per_video=2, num_proc=1
    )
    clip_args = pretrain_clip.PretrainArguments(
        data_dir=str(corpus), output_dir=str(folder / "clip"), image_size=16, patch_size=8, hidden_size=32,
        num_layers=1, num_heads=2, projection_dim=32, epochs=1, batch_size=8,
    )  # fmt: skip
    return corpus, pretrain_clip.ensure_pretrained_clip(clip_args, log=lambda *_: None)


@pytest.mark.slow
def test_accuracy_benchmark_at_tiny_size(tmp_path, tiny_corpus_and_clip):
    corpus, clip = tiny_corpus_and_clip
    methods = ["CLIP zero-shot (no fine-tuning)", "meanP", accuracy.DEFAULT_S2CA]
    tiny = [*TINY, "--frame_cache_dir", str(tmp_path / "frames"), "--synthetic_num_videos", "24"]
    report = accuracy.main(
        ["--seeds", "0", "1", "--methods", *methods, "--data_dir", str(corpus), "--clip", clip]
        + ["--max_steps", "2", "--work_dir", str(tmp_path / "runs")]
        + ["--out", str(tmp_path / "results"), "--", *tiny]
    )
    saved = json.loads((tmp_path / "results" / "accuracy.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(report["rows"]))
    assert [(row["method"], row["split"]) for row in saved["rows"]] == [
        (method, split) for method in methods for split in ("val", "test", "compositional", "open_vocab")
    ]
    # every split has its ceilings: a perfect observer scores 100 on a corpus without indistinguishable clips
    assert set(saved["oracles"]) == set(accuracy.SPLITS)
    assert all(o["everything"] == 100.0 and o["no motion"] <= 100.0 for o in saved["oracles"].values())
    # each trained row says where val peaked, within the 2-step budget
    assert all(1 <= step <= 2 for row in saved["rows"] if row["method"] == "meanP" for step in row["best_steps"])
    by_method = {row["method"]: row for row in saved["rows"] if row["split"] == "test"}
    assert by_method["meanP"]["seeds"] == [0, 1] and by_method["CLIP zero-shot (no fine-tuning)"]["seeds"] == [0]
    for row in saved["rows"]:
        for direction in ("text_to_video", "video_to_text"):
            assert set(row[direction]) >= {"R@1", "R@5", "R@10", "MdR", "MnR"}
            assert 0 <= row[direction]["R@1"] <= 100 and row[f"{direction}_std"]["R@1"] >= 0
    # the machine and the small CLIP's zero-shot are in every results file
    assert (
        saved["clip_zero_shot"]["test"]["text_to_video"]["R@1"]
        == by_method["CLIP zero-shot (no fine-tuning)"]["text_to_video"]["R@1"]
    )
    assert "cores" in saved["machine"] and "zero-shot" in (tmp_path / "results" / "accuracy.md").read_text()
    diagnosed = saved["diagnostics"][f"{accuracy.DEFAULT_S2CA} / seed 1"]
    stats = diagnosed["val"]
    assert len(stats["video_tokens_per_concept"]) == 4 and 0 <= stats["text_empty_concept_rate"] <= 1
    assert 0 <= stats["prototype_abs_cosine"] <= 1 and set(stats["lambda_e"]) == {"0.25", "0.5", "1.0", "2.0", "4.0"}
    for name in ("matched", "unmatched"):
        assert 0 <= stats[f"shared_concepts_{name}"] <= 4 and -1 <= stats[f"concept_cosine_{name}"] <= 1
    assert 0 < stats["text_attribute_purity"] <= 1 and 0 < stats["text_attribute_purity_chance"] <= 1
    for purity in ("video_object_purity", "video_object_concentration"):  # None: no patch shows an object (16 px)
        assert stats[purity] is None or 0 < stats[purity] <= 1, purity
    assert "purity objects / chance" in (tmp_path / "results" / "accuracy.md").read_text()
    # The diagnostics re-score each split from the concept outputs of the checkpoint selected on val; their combined
    # score must rank exactly as the model's phi . psi did in train.py's own evaluation of the same weights.
    evaluated = json.loads((tmp_path / "runs" / "S2CA_default-seed1" / "eval_results.json").read_text())
    [at_best] = [e["metrics"] for e in evaluated["evaluations"] if e["step"] == evaluated["best_step"]]
    for split in accuracy.SPLITS:
        assert diagnosed[split]["t2v_R@1_combined"] == at_best[split]["text_to_video"]["R@1"]
        # R@1 per query type, None where the split has no query of that type
        assert set(diagnosed[split]["query_types"]) == set(QUERY_TYPES)
        errors = diagnosed[split]["errors"]
        # the error kinds add up to the wrong top-1 hits, which are 100 - R@1 per 100 queries
        assert abs(sum(errors[k] for k in ERROR_KINDS) - errors["errors"]) < 1e-6
        assert abs(errors["errors"] - (100 - at_best[split]["text_to_video"]["R@1"])) < 1e-6
    assert "errors" in saved["diagnostics"]["meanP / seed 0"]["test"]  # every method has the breakdown
    table = (tmp_path / "results" / "accuracy.md").read_text()
    assert "| S2CA (default) | compositional |" in table and "| meanP | test |" in table
    assert "Ceilings" in table and "per query type" in table and "What fine-tuning keeps of pretraining" in table
    assert "| split | queries | everything | no frame order | no motion | no binding |" in table
    assert "| none |" in table.replace("| all | none |", "| none |")  # the error table has a none column
    # The concept table has one row per S2CA method, its statistics averaged over the two seeds.
    [concept_row] = [line for line in table.splitlines() if line.startswith("| S2CA (default) | ") and " / " in line]
    empty = statistics.fmean(
        saved["diagnostics"][f"{accuracy.DEFAULT_S2CA} / seed {s}"]["val"]["text_empty_concept_rate"] for s in (0, 1)
    )
    assert concept_row.split(" | ")[1].split(" / ")[0] == f"{empty:.2f}"
    assert saved["command"].startswith("python benchmarks/accuracy.py") and saved["versions"]["torch"]

    # An interrupted benchmark continues where it stopped: finished runs with the same arguments are not trained again.
    def no_training(*args, **kwargs):
        raise AssertionError(f"trained again: {args}")

    trained = runs.subprocess.run
    runs.subprocess.run = no_training
    try:
        again = accuracy.main(
            ["--seeds", "0", "1", "--methods", *methods[1:], "--data_dir", str(corpus), "--clip", clip]
            + ["--max_steps", "2", "--work_dir", str(tmp_path / "runs")]
            + ["--out", str(tmp_path / "again"), "--", *tiny]
        )
    finally:
        runs.subprocess.run = trained
    assert [r for r in again["rows"] if r["method"] == "meanP"] == [
        r for r in report["rows"] if r["method"] == "meanP"
    ]


@pytest.mark.slow
def test_s2ca_diagnosis_at_tiny_size(tmp_path, tiny_corpus_and_clip):
    corpus, clip = tiny_corpus_and_clip
    variants = ["hard Gumbel allocation", "soft allocation"]
    report = diagnosis.main(
        ["--seeds", "0", "--variants", *variants, "--data_dir", str(corpus), "--pretrained_clip_dir", clip]
        + ["--max_steps", "2", "--work_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]
        + ["--", *TINY, "--frame_cache_dir", str(tmp_path / "frames"), "--synthetic_num_videos", "24"]
    )
    saved = json.loads((tmp_path / "results" / "s2ca_diagnosis.json").read_text())
    assert [row["variant"] for row in saved["rows"]] == variants == [row["variant"] for row in report["rows"]]
    hard, soft = saved["rows"]
    assert hard["overrides"] == ["--allocation", "gumbel"] and soft["overrides"] == ["--allocation", "soft"]
    # Soft allocation gives every concept some weight on both sides and has no training noise to agree with.
    assert soft["runs"][0]["diagnostics"]["val"]["text_empty_concept_rate"] == 0
    assert soft["runs"][0]["diagnostics"]["val"]["text_train_eval_agreement"] is None
    assert 0 <= hard["runs"][0]["diagnostics"]["val"]["video_train_eval_agreement"] <= 1
    [run] = hard["runs"]
    assert run["diagnostics"]["test"]["t2v_R@1_combined"] == run["metrics"]["test"]["text_to_video"]["R@1"]
    assert "clip_zero_shot" in saved
    table = (tmp_path / "results" / "s2ca_diagnosis.md").read_text()
    assert "| soft allocation |" in table and "| – / – |" in table  # soft: no agreement to report

    # --reuse: runs recorded on this machine with the same CLIP and length are taken over, not trained again
    def no_training(arguments):
        raise AssertionError(f"trained again: {arguments}")

    trained = diagnosis.runs.run_training
    diagnosis.runs.run_training = no_training
    try:
        again = diagnosis.main(
            ["--seeds", "0", "--variants", *variants, "--data_dir", str(corpus), "--pretrained_clip_dir", clip]
            + ["--max_steps", "2", "--work_dir", str(tmp_path / "runs2"), "--out", str(tmp_path / "again")]
            + ["--reuse", str(tmp_path / "results" / "s2ca_diagnosis.json")]
            + ["--", *TINY, "--frame_cache_dir", str(tmp_path / "frames"), "--synthetic_num_videos", "24"]
        )
        assert [r["runs"][0]["metrics"] for r in again["rows"]] == [r["runs"][0]["metrics"] for r in saved["rows"]]
        assert again["rows"][0]["runs"][0]["reused_from"] == "s2ca_diagnosis.json"
        with pytest.raises(SystemExit, match="--max_steps 2, not 3"):
            diagnosis.main(
                ["--seeds", "0", "--variants", *variants, "--data_dir", str(corpus), "--pretrained_clip_dir", clip]
                + ["--max_steps", "3", "--work_dir", str(tmp_path / "runs3"), "--out", str(tmp_path / "third")]
                + ["--reuse", str(tmp_path / "results" / "s2ca_diagnosis.json")]
            )
    finally:
        diagnosis.runs.run_training = trained


def test_goal_table_reads_the_gaps_off_the_rows():
    """The method's goal: the default S2CA >= seqTransf + 5 and >= meanP + 10 text->video R@1, the gap above std."""

    def row(method, split, r1, std):
        return {"method": method, "split": split, "text_to_video": {"R@1": r1}, "text_to_video_std": {"R@1": std}}

    values = {"meanP": (50.0, 1.0), "seqTransf": (60.0, 1.0), accuracy.DEFAULT_S2CA: (66.0, 2.0)}
    rows = [row(m, split, *values[m]) for m in values for split in accuracy.SPLITS]
    diagnostics = {
        f"{accuracy.DEFAULT_S2CA} / seed {s}": {
            split: {"t2v_R@1_combined": 66.0 + s, "t2v_R@1_instance_only": 65.0} for split in accuracy.SPLITS
        }
        for s in (0, 1)
    }
    lines = accuracy.goal_lines({"rows": rows, "diagnostics": diagnostics})
    [test] = [line for line in lines if line.startswith("| test |")]
    cells = test.split(" | ")
    assert cells[1] == "66.0 ± 2.0"
    assert cells[2] == "+6.0 (std 2.0): met"  # seqTransf + 5
    assert cells[3] == "+16.0 (std 2.0): met"  # meanP + 10
    assert cells[4].rstrip(" |") == "+1.5"  # s_inst + s_con over s_inst alone, mean over seeds
    rows = [row(m, s, *(values[m] if m != "seqTransf" else (62.0, 1.0))) for m in values for s in accuracy.SPLITS]
    assert "+4.0 (std 2.0): not met" in accuracy.goal_lines({"rows": rows, "diagnostics": diagnostics})[3]
    assert accuracy.goal_lines({"rows": rows[:3], "diagnostics": {}}) == []  # no baselines: no goal table


def test_an_interrupted_benchmark_run_continues_from_its_checkpoint(tmp_path, monkeypatch):
    commands = []

    def fake_train(command, **kwargs):
        commands.append(command)
        output_dir = command[command.index("--output_dir") + 1]
        if len(commands) == 1:  # killed after its first checkpoint
            (tmp_path / "run" / "checkpoints" / "checkpoint-750").mkdir(parents=True)
            raise KeyboardInterrupt
        (tmp_path / "run" / "eval_results.json").write_text(json.dumps({"output_dir": output_dir}))
        return type("Completed", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(runs.subprocess, "run", fake_train)
    arguments = ["--seed", "1", "--output_dir", str(tmp_path / "run")]
    with pytest.raises(KeyboardInterrupt):
        runs.run_training(arguments)
    assert commands[0][-2:] == ["--overwrite_output_dir", "true"]  # a new run starts afresh
    assert runs.run_training(arguments) == {"output_dir": str(tmp_path / "run")}
    assert commands[1][-2:] == ["--resume_from_checkpoint", "latest"]  # the same run, interrupted: continued
    assert runs.run_training(arguments) and len(commands) == 2  # finished: reused, not run again
    assert not list(tmp_path.glob(".*started*"))
    with pytest.raises(KeyboardInterrupt):  # other arguments: not that run, start afresh
        commands.clear()
        (tmp_path / "run" / runs.RUN_MARKER).unlink()
        import shutil

        shutil.rmtree(tmp_path / "run" / "checkpoints", ignore_errors=True)
        runs.run_training([*arguments, "--learning_rate", "1e-4"])
    assert commands[0][-2:] == ["--overwrite_output_dir", "true"]


def test_purity_counts_each_owners_most_frequent_label():
    import model_diagnostics
    import numpy as np

    rng = np.random.default_rng(0)
    groups = [([0, 0, 0, 1], ["colour", "colour", "shape", "shape"]), ([0, 1], ["colour", "motion"])]
    pooled, _ = model_diagnostics._purity(groups, rng, per_group=False)  # concept 0: 3 colour + 1 shape; 1: 1 + 1
    assert pooled == (3 + 1) / 6
    separate, _ = model_diagnostics._purity(groups, rng, per_group=True)  # (0, 0): 2 of 3; the rest pure
    assert separate == (2 + 1 + 1 + 1) / 6
    pure = [([k % 4 for k in range(40)], [k % 4 for k in range(40)])]
    value, chance = model_diagnostics._purity(pure, rng, per_group=True)
    assert value == 1.0 and chance < 0.6  # shuffled, the labels no longer follow the owners
    labels = np.full((1, 4, 4), -1)
    labels[0, :2, :2] = 0  # object 0 fills the top-left patch of a 2 x 2 grid
    labels[0, :2, 2:] = [[1, 1], [1, -1]]  # object 1 covers 3 of the top-right patch's 4 pixels
    labels[0, 2, 2] = 0  # one pixel of the bottom-right patch: the background wins there
    assert model_diagnostics.patch_majority(labels, 2).tolist() == [[0, 1, -1, -1]]  # row-major
    assert model_diagnostics.WORD_ATTRIBUTES["red"] == "colour" and "the" not in model_diagnostics.WORD_ATTRIBUTES

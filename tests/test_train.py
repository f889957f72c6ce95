"""training/train.py end to end on a tiny generated corpus with a tiny pretrained CLIP: the smoke run, two processes
against one, exact resume after SIGKILL, the ATR terms, the recipes and their validation."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import distill
import losses
import pytest
import run_folder
import torch
import train
import train_arguments
from helpers import free_port, tiny_corpus_and_clip
from safetensors.torch import load_file

from s2ca_hf import S2CAModel


REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "training" / "train.py"
KILL_WORKER = Path(__file__).parent / "train_kill_worker.py"
NUM_VIDEOS = 24  # 20 training clips x 2 captions = 40 pairs, 2 test and 2 compositional clips


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic corpus and a tiny CLIP pretrained on its frames for two epochs (a second)."""
    root = tmp_path_factory.mktemp("train")
    corpus, clip = tiny_corpus_and_clip(root, NUM_VIDEOS, size=16, clip_epochs=2)
    return {"root": root, "corpus": corpus, "clip": clip, "frames": str(root / "frames")}


def tiny_args(tiny, output_dir, *extra: str) -> list[str]:
    return [
        "--clip", tiny["clip"], "--data_dir", tiny["corpus"], "--synthetic_num_videos", str(NUM_VIDEOS),
        "--frame_cache_dir", tiny["frames"], "--max_frames", "4", "--num_concepts", "4",
        "--temporal_num_hidden_layers", "1", "--temporal_num_attention_heads", "2", "--learning_rate", "1e-3",
        "--report_to", "none", "--disable_tqdm", "true",
        # ATR is off in the synthetic recipe; these runs keep it on, so that the teacher, the ATR heads and
        # their checkpoints are exercised end to end.
        "--align", "true", "--transform", "true", "--reconstruct", "true", *extra,
    ] + (["--output_dir", str(output_dir)] if output_dir else [])  # fmt: skip


def history(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "log_history.jsonl").read_text().splitlines()]


def run(command: list[str], expect: int = 0) -> subprocess.CompletedProcess:
    # Real processes, not forks of this one (forking after torch ran can deadlock its thread pools).
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert completed.returncode == expect, completed.stderr[-3000:]
    return completed


# --- the smoke run -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_run_saves_a_model_that_automodel_loads_with_its_metrics(tiny, tmp_path):
    from transformers import AutoModel, AutoProcessor

    output = tmp_path / "run"
    summary = train.main(tiny_args(tiny, output, "--per_device_train_batch_size", "4", "--max_steps", "4"))

    model = AutoModel.from_pretrained(output / "final")
    assert isinstance(model, S2CAModel)
    processor = AutoProcessor.from_pretrained(output / "final")
    assert processor.video_processor.max_frames == 4
    # Only the student is exported: no teacher, no ATR head (they were trained: see the log's ATR line).
    saved = set(load_file(output / "final" / "model.safetensors"))
    assert saved == set(S2CAModel(model.config).state_dict())
    assert not any(key.startswith(("heads", "teacher", "student")) for key in saved)
    # ... while the checkpoint (for resuming) holds the heads too.
    checkpoint = run_folder.latest_checkpoint(str(output))
    assert any(key.startswith("heads.") for key in load_file(Path(checkpoint) / "model.safetensors"))

    results = json.loads((output / "eval_results.json").read_text())
    assert results["global_step"] == summary["global_step"] == 4
    for split in ("test", "compositional"):
        metrics = results["final_metrics"][split]
        assert 0 <= metrics["text_to_video"]["R@1"] <= 100 and metrics["video_to_text"]["MdR"] >= 1
    assert results["best_model"] and (output / "best" / "model.safetensors").is_file()
    # Both saved models carry their code, so they load with trust_remote_code where s2ca_hf is not installed.
    for folder in ("final", "best"):
        config = json.loads((output / folder / "config.json").read_text())
        assert config["auto_map"]["AutoModel"] == "modeling_s2ca.S2CAModel"
        assert (output / folder / "modeling_s2ca.py").is_file() and (output / folder / "video_io.py").is_file()
    assert [record["step"] for record in history(output)] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in history(output))


@pytest.mark.slow
def test_early_stopping_ends_the_run_after_patience_evaluations_without_a_better_val(tiny, tmp_path):
    output = tmp_path / "early"
    arguments = ["--per_device_train_batch_size", "4", "--max_steps", "40", "--eval_strategy", "steps"]
    arguments += ["--eval_steps", "1", "--early_stopping_patience", "2", "--align", "false", "--transform", "false"]
    summary = train.main(tiny_args(tiny, output, *arguments, "--reconstruct", "false"))
    steps = [e["step"] for e in summary["evaluations"]]
    assert summary["stopped_early"] == summary["global_step"] == steps[-1] < 40
    # it stopped exactly when the last 2 evaluations were no better than the best one before them
    assert steps[-2:] == [summary["best_step"] + 1, summary["best_step"] + 2]
    values = [e["metrics"]["val"]["text_to_video"]["R@1"] for e in summary["evaluations"]]
    best = values[steps.index(summary["best_step"])]
    assert best == max(values) and all(v <= best for v in values[-2:])
    with pytest.raises(ValueError, match="early_stopping_patience"):
        train_arguments.parse_arguments(["--early_stopping_patience", "2", "--eval_strategy", "no"])


# --- distributed -------------------------------------------------------------------------------------------------


GROUPED_LAUNCHER = """
import sys

sys.path[:0] = [{repo!r}, {training!r}, {tests!r}]
import train
from test_train import with_groups_and_foils

train.load_corpus = with_groups_and_foils(train.load_corpus)
train.main(sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.parametrize("batches", ["shuffled", "grouped, with foils"])
def test_two_processes_train_exactly_like_one_over_the_same_global_batch(tiny, tmp_path, batches):
    # Soft allocation (no Gumbel noise) and Reconstruct masking every token (no random mask): the only randomness
    # left is the data order, which is the same global batch in both runs.
    common = tiny_args(tiny, None, "--eval_strategy", "no", "--allocation", "soft",
                       "--reconstruct_mask_ratio", "1.0")  # fmt: skip
    script, steps, per_device = TRAIN, 3, 2
    if batches == "shuffled":
        common += ["--group_batches", "false", "--use_foils", "false"]
    else:
        # Made-up groups and foils, through a launcher that patches load_corpus in each process; 6 steps of 8 rows
        # cross an epoch, whose new plan the processes must follow too.
        script, steps, per_device = tmp_path / "grouped_train.py", 6, 4
        paths = {"repo": str(REPO), "training": str(REPO / "training"), "tests": str(REPO / "tests")}
        script.write_text(GROUPED_LAUNCHER.format(**paths))
    common += ["--max_steps", str(steps)]
    one, two = tmp_path / "one", tmp_path / "two"
    run([sys.executable, str(script), *common, "--output_dir", str(one), "--per_device_train_batch_size",
         str(2 * per_device)])  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    completed = run([*launch, str(script), *common, "--output_dir", str(two), "--per_device_train_batch_size",
                     str(per_device)])  # fmt: skip
    output = completed.stdout + completed.stderr
    assert f"2 process(es) x {per_device}" in output
    assert ("batches of whole minimal-pair groups, foils on" in output) == (batches != "shuffled")

    losses_one = [record["loss"] for record in history(one)]
    losses_two = [record["loss"] for record in history(two)]
    assert len(losses_one) == steps and max(abs(a - b) for a, b in zip(losses_one, losses_two)) < 1e-5
    a, b = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    changed = load_file(Path(tiny["clip"]) / "model.safetensors")["visual_projection.weight"]
    assert not torch.equal(a["visual_projection.weight"], changed)  # the optimizer did step
    assert max(float((a[key] - b[key]).abs().max()) for key in a) < 1e-5


# --- exact resume ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill_continues_exactly(tiny, tmp_path):
    # Steps of 2 accumulated batches of 4: 4 or 5 per epoch (the tiny corpus has 32 to 40 pairs), so that 8 steps
    # cross an epoch boundary. The killed run dies right after logging step 7: checkpoint-6, in the middle of the
    # second epoch, is the latest complete one, and the resumed run skips the batches of that epoch it trained on.
    common = tiny_args(tiny, None, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                       "--max_steps", "8", "--save_steps", "3", "--eval_strategy", "no")  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run([sys.executable, str(KILL_WORKER), *common, "--output_dir", str(straight)])
    run(
        [sys.executable, str(KILL_WORKER), *common, "--output_dir", str(killed), "--kill_after_step", "7"],
        expect=-signal.SIGKILL,
    )
    assert [r["step"] for r in history(killed)] == [1, 2, 3, 4, 5, 6, 7]
    assert not (killed / "final").exists()
    assert run_folder.latest_checkpoint(str(killed)).endswith("checkpoint-6")

    completed = run(
        [sys.executable, str(KILL_WORKER), *common, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"]
    )
    assert "Resumed from" in completed.stdout + completed.stderr
    assert history(killed) == history(straight)  # same losses, learning rates, temperatures, step by step
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_checkpoints_are_complete_or_absent(tiny, tmp_path):
    output = tmp_path / "run"
    staging = output / "checkpoints" / ".staging-7"
    staging.mkdir(parents=True)  # what a crash during a save leaves
    (staging / "trainer_state.json").write_text("{}")  # written before the rename: still not a checkpoint
    (output / "checkpoints" / "checkpoint-2.bak").mkdir()  # a user's copy: not a checkpoint either
    assert run_folder.latest_checkpoint(str(output)) is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train.main(tiny_args(tiny, output, "--resume_from_checkpoint", "latest"))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        train.main(tiny_args(tiny, output, "--resume_from_checkpoint", str(staging)))


@pytest.mark.slow
def test_a_second_run_in_the_same_output_dir_is_refused_or_replaces_the_first(tiny, tmp_path):
    output = tmp_path / "run"
    train.main(tiny_args(tiny, output, "--max_steps", "2", "--eval_strategy", "no"))
    (output / "checkpoints" / "checkpoint-2.bak").mkdir()
    assert run_folder.latest_checkpoint(str(output)).endswith("checkpoint-2")  # the copy is ignored
    with pytest.raises(FileExistsError, match="resume_from_checkpoint latest.*overwrite_output_dir"):
        train.main(tiny_args(tiny, output, "--max_steps", "1", "--eval_strategy", "no"))
    assert len(history(output)) == 2  # nothing of the first run was touched
    train.main(tiny_args(tiny, output, "--max_steps", "1", "--eval_strategy", "no", "--overwrite_output_dir", "true"))
    assert [record["step"] for record in history(output)] == [1]  # the log is the new run's alone
    assert run_folder.checkpoint_steps(str(output / "checkpoints")) == [1]
    assert (output / "checkpoints" / "checkpoint-2.bak").is_dir()  # only what a run writes is deleted


@pytest.mark.slow
def test_a_run_that_diverges_stops_with_an_error_and_saves_no_model(tiny, tmp_path):
    output = tmp_path / "run"
    # A learning rate of 1e30 sends the weights to infinity after one step: the next loss is not finite.
    with pytest.raises(FloatingPointError, match="NaN or infinite at step 2"):
        train.main(tiny_args(tiny, output, "--max_steps", "4", "--eval_strategy", "no", "--learning_rate", "1e30"))
    assert not (output / "final").exists() and not (output / "eval_results.json").exists()
    assert len(history(output)) == 1  # the one finite step
    with pytest.raises(ValueError, match="`weight_decay` must be a finite number, got inf"):
        train.main(tiny_args(tiny, output, "--weight_decay", "inf"))


@pytest.mark.slow
def test_resuming_from_a_damaged_checkpoint_stops_naming_the_file(tiny, tmp_path):
    output = tmp_path / "run"
    train.main(tiny_args(tiny, output, "--max_steps", "2", "--save_steps", "2", "--eval_strategy", "no"))
    checkpoint = Path(run_folder.latest_checkpoint(str(output)))
    listed = json.loads((checkpoint / "checksums.json").read_text())
    assert "model.safetensors" in listed and "trainer_state.json" in listed
    weights = checkpoint / "model.safetensors"
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01  # one bit in the middle of a tensor
    for damaged in (bytes(flipped), original[: len(original) // 2]):  # a flipped bit, a truncated file
        weights.write_bytes(damaged)
        with pytest.raises(ValueError, match=f"{checkpoint}/model.safetensors is not the file written there"):
            train.main(tiny_args(tiny, output, "--max_steps", "4", "--resume_from_checkpoint", "latest"))
    weights.unlink()
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        train.main(tiny_args(tiny, output, "--max_steps", "4", "--resume_from_checkpoint", "latest"))


@pytest.mark.slow
def test_a_second_run_while_the_first_runs_is_refused_naming_it(tiny, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    with run_folder.RunLock(str(output)):  # what a run in progress holds
        for extra in ([], ["--overwrite_output_dir", "true"]):
            with pytest.raises(FileExistsError, match=f"output_dir {output} is in use by another training run"):
                train.main(tiny_args(tiny, output, "--max_steps", "1", "--eval_strategy", "no", *extra))
    train.main(tiny_args(tiny, output, "--max_steps", "1", "--eval_strategy", "no"))  # free again
    assert (output / "final").is_dir()


# --- ATR distillation --------------------------------------------------------------------------------------------


def atr_setup(tiny, **switches):
    torch.manual_seed(0)
    model_args = train_arguments.ModelArguments(clip=tiny["clip"], **switches)
    student = S2CAModel.from_clip(tiny["clip"], num_frames=4, num_concepts=4, allocation="soft",
                                  temporal_num_hidden_layers=1, temporal_num_attention_heads=2)  # fmt: skip
    teacher, heads, atr_loss = train.build_distillation(model_args, student, tiny["clip"], max_positions=32)
    return distill.S2CATrainingModule(student, heads).train(), teacher, atr_loss


def tiny_batch(tiny, size: int = 6, foils: bool = False) -> dict:
    """`size` rows of different clips, collated for training; with `foils`, one made-up foil for every row but the
    second (a masked slot)."""
    from s2ca_hf import S2CAProcessor
    from s2ca_hf.data import VideoTextCollator, load_corpus

    processor = S2CAProcessor.from_clip(tiny["clip"], max_frames=4, size={"shortest_edge": 16},
                                        crop_size={"height": 16, "width": 16})  # fmt: skip
    rows = load_corpus("synthetic", tiny["corpus"], "train", num_videos=NUM_VIDEOS).select(range(0, 2 * size, 2))
    rows = [{**row, "foils": [] if i == 1 else [f"not {row['text']}"]} for i, row in enumerate(rows)]
    return VideoTextCollator(processor, return_video_index=True, return_foils=foils)(rows)


@pytest.mark.parametrize("term", ["align", "transform", "reconstruct"])
def test_each_atr_term_is_finite_and_decreases_on_a_batch_it_is_trained_on(tiny, term):
    others = {other: False for other in ("align", "transform", "reconstruct") if other != term}
    module, teacher, atr_loss = atr_setup(tiny, **others)
    assert set(atr_loss.weights) == {"align", "transform", "reconstruct"}
    assert [name for name, weight in atr_loss.weights.items() if weight] == [term]
    batch = tiny_batch(tiny)
    video_index = batch.pop("video_index")
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    values = []
    for step in range(12):
        torch.manual_seed(step)
        out = atr_loss(module.student, module(**batch), teacher(**batch, video_index=video_index))
        assert set(out.terms) == {term} and torch.isfinite(out.terms[term])
        values.append(float(out.terms[term]))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert values[-1] < 0.9 * values[0], values
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())  # frozen
    assert not any(p.requires_grad for p in teacher.parameters())
    assert len(teacher._video_cache) == 6  # teacher outputs cached per video


def test_all_atr_terms_off_trains_the_plain_s2ca_loss(tiny):
    module, teacher, atr_loss = atr_setup(tiny, align=False, transform=False, reconstruct=False)
    assert teacher is None and atr_loss is None and module.heads is None
    batch = tiny_batch(tiny)
    video_index = batch.pop("video_index")
    total, value = train.training_loss(module, batch, video_index, losses.S2CALoss())
    expected = module.student(**batch, return_loss=True).loss
    assert torch.allclose(total, expected, atol=1e-6) and torch.allclose(value, expected.detach(), atol=1e-6)
    # A zero weight is a switch too.
    module, teacher, _ = atr_setup(tiny, align_weight=0.0, transform_weight=0.0, reconstruct_weight=0.0)
    assert teacher is None


def test_atr_adds_its_terms_to_the_s2ca_loss(tiny):
    module, teacher, atr_loss = atr_setup(tiny)
    batch = tiny_batch(tiny)
    video_index = batch.pop("video_index")
    torch.manual_seed(0)
    total, value = train.training_loss(module, batch, video_index, losses.S2CALoss(), teacher, atr_loss)
    torch.manual_seed(0)
    plain = losses.S2CALoss()(module.student, module(**batch).outputs).value
    torch.manual_seed(0)
    atr = atr_loss(module.student, module(**batch), teacher(**batch, video_index=video_index))
    assert set(atr.terms) == {"align", "transform", "reconstruct"}
    assert torch.allclose(value, plain + atr.value, atol=1e-5) and value > plain + 0.1


def test_foils_go_to_the_s2ca_loss_alone_never_to_the_atr_terms(tiny):
    module, teacher, atr_loss = atr_setup(tiny)
    batch = tiny_batch(tiny, foils=True)
    video_index = batch.pop("video_index")
    foils = {key: batch[key] for key in losses.LOSS_KEYS if key in batch}
    assert foils["foil_mask"].tolist() == [1, 0, 1, 1, 1, 1]
    captions_and_videos = {key: value for key, value in batch.items() if key not in losses.LOSS_KEYS}
    torch.manual_seed(0)
    total, value = train.training_loss(module, batch, video_index, losses.S2CALoss(), teacher, atr_loss)
    assert not set(losses.LOSS_KEYS) & set(batch)  # taken out before the forward and the teacher
    torch.manual_seed(0)
    result = module(**captions_and_videos)
    s2ca = losses.S2CALoss()(module.student, result.outputs, video_index, **foils)
    atr = atr_loss(module.student, result, teacher(**captions_and_videos, video_index=video_index))
    assert torch.allclose(value, s2ca.value + atr.value, atol=1e-5)
    plain = losses.S2CALoss()(module.student, result.outputs, video_index)
    assert not torch.allclose(s2ca.value, plain.value, atol=1e-4)


def with_groups_and_foils(load_corpus):
    """`load_corpus` whose training split carries made-up `group` and `foils` columns (whatever the generator
    writes): clips in threes, every fourth clip in none; one foil for two rows in three."""

    def load(corpus, data_dir, split, **kwargs):
        dataset = load_corpus(corpus, data_dir, split, **kwargs)
        if split != "train":
            return dataset
        dataset = dataset.remove_columns([name for name in ("group", "foils") if name in dataset.column_names])
        groups = [-1 if index % 4 == 3 else index // 3 for index in dataset["video_index"]]
        foils = [[f"not {text}"] if i % 3 else [] for i, text in enumerate(dataset["text"])]
        return dataset.add_column("group", groups).add_column("foils", foils)

    return load


@pytest.mark.slow
def test_groups_and_foils_train_end_to_end_and_resume_exactly(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "load_corpus", with_groups_and_foils(train.load_corpus))
    # Batches of 8: a few per epoch, so that 10 steps cross epochs (the sampler's plan changes with each).
    common = tiny_args(tiny, None, "--per_device_train_batch_size", "8", "--max_steps", "10", "--save_steps", "3",
                       "--eval_strategy", "no")  # fmt: skip
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    train.main([*common, "--output_dir", str(straight)])
    assert "batches of whole minimal-pair groups, foils on" in capsys.readouterr().out

    class Crash(Exception):
        pass

    log_step = train.log_step

    def log_then_crash(accelerator, path, record, report):
        log_step(accelerator, path, record, report)
        if record["step"] == 7:
            raise Crash

    monkeypatch.setattr(train, "log_step", log_then_crash)
    with pytest.raises(Crash):
        train.main([*common, "--output_dir", str(crashed)])
    monkeypatch.setattr(train, "log_step", log_step)
    resumed_at = int(run_folder.latest_checkpoint(str(crashed)).rsplit("-", 1)[1])
    assert resumed_at < 7  # steps to replay, from the middle of an epoch
    train.main([*common, "--output_dir", str(crashed), "--resume_from_checkpoint", "latest"])
    assert history(crashed) == history(straight)  # the same batches, foils and losses, step by step
    a, b = load_file(straight / "final" / "model.safetensors"), load_file(crashed / "final" / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)

    # Switched off, the same run trains on other batches, without foils.
    plain = tmp_path / "plain"
    train.main([*common, "--output_dir", str(plain), "--group_batches", "false", "--use_foils", "false"])
    assert "batches shuffled, foils off" in capsys.readouterr().out
    assert history(plain)[0]["loss"] != history(straight)[0]["loss"]


# --- optimisation ------------------------------------------------------------------------------------------------


def test_parameter_groups_scale_clip_and_spare_biases_norms_scale_and_prototypes(tiny):
    module, _, _ = atr_setup(tiny)
    args = train_arguments.TrainingArguments(learning_rate=1e-4, clip_lr_scale=1e-3, weight_decay=0.2)
    groups = train.parameter_groups(module, args)
    where = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(module.named_parameters())
    assert len(where) == len(named)
    assert where[id(named["student.text_model.encoder.layers.0.mlp.fc1.weight"])] == (pytest.approx(1e-7), 0.2)
    assert where[id(named["student.text_model.encoder.layers.0.mlp.fc1.bias"])] == (pytest.approx(1e-7), 0.0)
    assert where[id(named["student.logit_scale"])] == (pytest.approx(1e-7), 0.0)
    assert where[id(named["student.concepts.prototypes"])] == (1e-4, 0.0)
    assert where[id(named["student.temporal.layers.0.mlp.fc1.weight"])] == (1e-4, 0.2)
    assert where[id(named["heads.project_text.1.weight"])] == (1e-4, 0.0)  # a LayerNorm


# --- recipes -----------------------------------------------------------------------------------------------------


RECIPES = ["synthetic", "msrvtt", "msrvtt_7k", "msvd", "didemo", "activitynet"]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_parses_with_the_method_budgets(name):
    config = REPO / "training" / "configs" / f"{name}.yaml"
    model_args, data_args, args, recipe = train_arguments.parse_arguments(["--config", str(config)])
    assert recipe == name and args.output_dir == os.path.join("runs", name)
    if name == "synthetic":
        assert model_args.clip is None and data_args.eval_splits == ["val", "test", "compositional", "open_vocab"]
        assert data_args.max_frames == 4 and data_args.synthetic_num_videos == 2500
        assert data_args.selection_split == "val" and model_args.model_config["num_concepts"] == 16
        assert args.clip_lr_scale == 0.3  # chosen on val (diagnosis rounds 7, 8 and 11)
        # ATR off: every term cost val R@1 with the small CLIP as teacher (diagnosis rounds 15 and 16).
        assert not (model_args.align or model_args.transform or model_args.reconstruct)
        return
    words, frames = (32, 12) if name in ("msrvtt", "msrvtt_7k", "msvd") else (64, 64)
    assert (data_args.max_words, data_args.max_frames) == (words, frames)
    assert args.num_train_epochs == (10 if name == "activitynet" else 5)
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 128  # global batch on one device
    assert (args.learning_rate, args.clip_lr_scale, args.weight_decay) == (1e-4, 1e-3, 0.2)
    assert (args.adam_beta2, args.adam_epsilon, args.warmup_ratio, args.max_grad_norm) == (0.98, 1e-6, 0.1, 1.0)
    assert data_args.selection_split == "test"
    assert model_args.clip == "openai/clip-vit-base-patch32"
    if name == "msrvtt_7k":
        assert data_args.protocol == ["train_csv=7k"]


def test_command_line_overrides_the_recipe():
    _, data_args, args, _ = train_arguments.parse_arguments(["--learning_rate", "3e-4", "--max_frames", "8"])
    assert args.learning_rate == 3e-4 and data_args.max_frames == 8
    assert args.output_dir == os.path.join("runs", "synthetic")


def test_any_config_field_is_a_recipe_key_and_a_flag_checked_by_the_config(tmp_path):
    # S2CAConfig is the only list of model fields: every one of them can be set, typed by its annotation.
    model_args, *_ = train_arguments.parse_arguments(
        ["--num_concepts", "4", "--allocation=gumbel", "--gumbel_tau", "0.5", "--concept_tracks", "true"]
        + ["--use_concepts", "true", "--temporal_intermediate_size", "none", "--prototype_init_std", "0.5"]
    )
    assert model_args.model_config == {
        "temporal_num_hidden_layers": 2,  # from the recipe
        "temporal_num_attention_heads": 4,
        "num_concepts": 4,
        "allocation": "gumbel",
        "gumbel_tau": 0.5,
        "concept_tracks": True,
        "use_concepts": True,
        "temporal_intermediate_size": None,
        "prototype_init_std": 0.5,
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text("late_interaction_weight: 0.5\ntokens_per_concept: 2\n")
    model_args, *_ = train_arguments.parse_arguments(["--config", str(recipe), "--late_interaction_weight", "0.25"])
    assert model_args.model_config == {"late_interaction_weight": 0.25, "tokens_per_concept": 2}
    for flags, message in (
        (["--num_concepts", "0"], "num_concepts"),
        (["--late_interaction_weight", "-1"], "late_interaction_weight"),
        (["--use_concepts", "maybe"], "use_concepts"),
        (["--num_concepts", "four"], "num_concepts"),
        (["--projection_dim", "64"], "--projection_dim"),  # comes from the CLIP checkpoint
    ):
        with pytest.raises(ValueError, match=message):
            train_arguments.parse_arguments(flags)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("learning_rte: 1.0e-4\n", "learning_rte"),
        ("learning_rate: fast\n", "learning_rate"),
        ("allocation: banana\n", "allocation"),
        ("max_words: 500\n", "max_words"),
        ("per_device_train_batch_size: 0\n", "per_device_train_batch_size"),
        ("eval_splits: [test]\nselection_split: val\n", "selection_split"),
        ("metric_for_best_model: R@1\n", "metric_for_best_model"),
        ("- a list\n", "mapping"),
    ],
)
def test_a_recipe_with_an_unknown_key_or_a_bad_value_fails_naming_it(tmp_path, recipe, message):
    path = tmp_path / "bad.yaml"
    path.write_text(recipe)
    with pytest.raises(ValueError, match=message):
        train_arguments.parse_arguments(["--config", str(path)])


def test_an_unknown_command_line_flag_fails_naming_it():
    with pytest.raises(ValueError, match="--learning_rte"):
        train_arguments.parse_arguments(["--learning_rte", "1"])

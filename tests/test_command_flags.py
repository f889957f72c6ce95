"""Every command takes both spellings of a flag (`--top_k` and `--top-k`), train.py the HF example scripts' forms
(a positional recipe, `--model_name_or_path`), and `--quiet` where there are progress bars."""

import subprocess
import sys
from pathlib import Path

import pytest
import train_arguments

from s2ca_hf.utils import ArgumentParser


REPO = Path(__file__).resolve().parents[1]


def test_every_long_option_answers_to_both_spellings():
    parser = ArgumentParser()
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("-k", "--num_items", dest="k", type=int)
    assert vars(parser.parse_args(["--batch-size", "3", "--top_k", "4", "--num-items", "5"])) == {
        "batch_size": 3,
        "top_k": 4,
        "k": 5,
    }
    assert parser.parse_args(["--batch_size", "6", "-k", "7"]).k == 7


def test_no_command_builds_a_plain_argparse_parser():
    plain = []
    for folder in ("s2ca_hf", "training", "benchmarks", "space"):
        for path in (REPO / folder).rglob("*.py"):
            if "argparse.ArgumentParser(" in path.read_text() and path.name != "train_arguments.py":
                plain.append(str(path.relative_to(REPO)))
    assert plain == []  # train_arguments' pre-parser only reads --config; HfArgumentParser takes both spellings


@pytest.mark.parametrize(
    "module, argv",
    [
        ("s2ca_hf.retrieval.cli", ["search", "--index", "nowhere", "--top_k", "3", "a dog"]),
        ("s2ca_hf.retrieval.cli", ["index", "--model", "m", "--videos", "v", "--out", "o", "--batch_size", "2"]),
    ],
)
def test_the_cli_parsers_take_underscore_flags(module, argv):
    from s2ca_hf.retrieval import cli

    parser = cli._search_parser() if argv[0] == "search" else cli._index_parser()
    args = parser.parse_args(argv[1:])
    assert (args.k == 3) if argv[0] == "search" else (args.batch_size == 2)


def test_train_takes_a_positional_recipe_model_name_or_path_and_quiet():
    recipe = str(REPO / "training" / "configs" / "synthetic.yaml")
    model_args, _, args, name = train_arguments.parse_arguments(
        [recipe, "--model_name_or_path", "my/clip", "--quiet", "--max-steps", "3"]
    )
    assert name == "synthetic" and model_args.clip == "my/clip" and args.disable_tqdm and args.max_steps == 3


def test_evaluate_model_takes_both_spellings_and_quiet():
    completed = subprocess.run(
        [sys.executable, str(REPO / "training" / "evaluate_model.py"), "--help"], capture_output=True, text=True
    )
    assert completed.returncode == 0
    assert "--data_dir DATA_DIR, --data-dir DATA_DIR" in completed.stdout and "--quiet" in completed.stdout


def test_a_smaller_built_in_corpus_scales_the_recipes_evaluation_splits():
    _, data, _, _ = train_arguments.parse_arguments(["--synthetic_num_videos", "200"])
    sizes = [getattr(data, f"synthetic_{s}_size") for s in ("val", "test", "compositional", "open_vocab")]
    assert sizes == [16, 40, 40, 24]  # the recipe's 200 / 500 / 500 / 300 for 2,500 clips, scaled
    _, data, _, _ = train_arguments.parse_arguments(["--synthetic_num_videos", "200", "--synthetic-val-size", "30"])
    assert (data.synthetic_val_size, data.synthetic_test_size) == (30, 40)  # a size given is kept
    _, data, _, _ = train_arguments.parse_arguments([])
    assert (data.synthetic_val_size, data.synthetic_test_size) == (200, 500)


def test_help_descriptions_are_whole_sentences(capsys):
    from s2ca_hf.visualization import main as explain_main

    with pytest.raises(SystemExit):
        explain_main(["--help"])
    description = " ".join(capsys.readouterr().out.split())
    assert "what each concept added to the score of one text-video pair." in description  # not cut at a line end

"""Publish a trained S2CA model to the Hugging Face Hub: export, parity check, model card, one commit.

    python training/push_to_hub.py --model runs/msrvtt/final --repo_id org/s2ca-msrvtt \
        --results results/msrvtt_test.json [--results ...] [--recipe training/configs/msrvtt.yaml] \
        [--dry_run OUT] [--create_pr] [--revision BRANCH] [--private] [--tag v0.1.0]

1. Loads the model and processor with `s2ca_hf`, registers them (and the `"video-text-retrieval"` pipeline) for
   the Auto classes, and writes the repository folder: `model.safetensors`, `config.json` (`auto_map`,
   `custom_pipelines`), the model code files, the processor and tokenizer files.
2. Checks that every results file was measured on exactly these weights (sha256 of `model.safetensors`).
3. Parity check (`parity.py`): a fresh process that cannot import `s2ca_hf` loads the folder with
   `trust_remote_code=True`; its processed inputs, text and video features, logits and pipeline ranking on a fixed
   input must equal the in-memory model's, or the export stops and prints the difference.
4. Renders `README.md` from `hub_cards/template.md` (`model_card.py`); the numbers in it are read from the results
   files (`results.py`), never typed in.
5. Unless `--dry_run OUT`: creates the repository if needed, uploads the folder in one commit (a pull request with
   `--create_pr`), tags that commit (the card tells users to pin the tag) and keeps the rendered card in
   `hub_cards/`.
"""

import argparse
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from model_card import is_hub_id, parity_statement, render_model_card
from parity import ParityError, check_parity
from results import WEIGHTS_NAME, ResultsError, check_results_for_model, load_results

import s2ca_hf
from s2ca_hf import S2CAModel, S2CAProcessor, VideoTextRetrievalPipeline, register_for_auto_class
from s2ca_hf.utils import ArgumentParser, file_sha256, first_paragraph


CARD_DIR = Path(__file__).resolve().parents[1] / "hub_cards"


# ---------------------------------------------------------------------------------------------------------------------
# The repository folder
# ---------------------------------------------------------------------------------------------------------------------


def _same_tensors(path_a: str | os.PathLike, path_b: str | os.PathLike) -> bool:
    from safetensors import safe_open

    with safe_open(path_a, "pt") as a, safe_open(path_b, "pt") as b:
        if set(a.keys()) != set(b.keys()):
            return False
        return all(torch.equal(a.get_tensor(key), b.get_tensor(key)) for key in a.keys())


def write_repo_folder(
    model: S2CAModel, processor: S2CAProcessor, folder: str | os.PathLike, source_dir: str | None = None
) -> str:
    """Writes weights, config, code and processor files into `folder` (which must be empty or absent) and returns
    the sha256 of the written `model.safetensors`."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} is not empty: the repository folder is written from scratch, so stale files "
            "cannot be uploaded with it. Remove it or pick another folder."
        )
    folder.mkdir(parents=True, exist_ok=True)
    register_for_auto_class()
    # Saving through the pipeline is what writes `custom_pipelines` into config.json and copies pipeline_s2ca.py
    # (transformers has no register_for_auto_class for pipelines); it also saves the model with its auto_map.
    pipe = VideoTextRetrievalPipeline(model=model, processor=processor, task=s2ca_hf.PIPELINE_TASK)
    pipe.save_pretrained(folder)
    processor.save_pretrained(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise RuntimeError(
            f"save_pretrained wrote no single {WEIGHTS_NAME} in {folder} (a sharded checkpoint?); "
            "results files are keyed on the sha256 of that one file."
        )
    # Results files name the sha256 of the weights they were measured on. Re-serialising equal tensors may still
    # change the bytes (another transformers or safetensors version), so publish the evaluated file itself when
    # it holds exactly the tensors just saved; the parity check below then runs on those very bytes.
    source = Path(source_dir) / WEIGHTS_NAME if source_dir else None
    if source is not None and source.is_file() and file_sha256(source) != file_sha256(weights):
        if _same_tensors(source, weights):
            shutil.copyfile(source, weights)
    return file_sha256(weights)


# ---------------------------------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------------------------------


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    tag: str,
    revision: str | None = None,
    create_pr: bool = False,
    private: bool = False,
    commit_message: str | None = None,
    api: HfApi | None = None,
):
    """Creates the repository if needed, uploads `folder` in one commit (or pull request) and tags that commit.

    The tag is checked before anything is uploaded: an existing tag would leave the card pinning other files.
    """
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    try:
        tags = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="model").tags}
    except RepositoryNotFoundError:
        tags = set()
    if tag in tags:
        raise SystemExit(
            f"{repo_id} already has a tag {tag!r}, and the card pins it: pass another --tag (the card's usage "
            "snippet pins the tag created for this commit)."
        )
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or f"Upload S2CA model (s2ca-hf {s2ca_hf.__version__})",
    )
    # A pull request's commit holds exactly the reviewed files, so the tag can point at it before the merge.
    api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="model", tag_message=commit.commit_message)
    return commit


# ---------------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=first_paragraph(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="saved model and processor (folder or Hub id)")
    parser.add_argument("--repo_id", required=True, help="target Hub repository, org/name")
    parser.add_argument("--results", action="append", default=[], help="results JSON of training/evaluate_model.py")
    parser.add_argument("--dry_run", metavar="OUT", help="write and check the folder OUT, upload nothing")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--tag", default=f"v{s2ca_hf.__version__}", help="tag created at the commit (pinned by the card)"
    )
    parser.add_argument("--license", default="apache-2.0", help="licence of the weights, for the card")
    parser.add_argument(
        "--base_model", help="the CLIP checkpoint the model started from, e.g. openai/clip-vit-base-patch32"
    )
    parser.add_argument(
        "--dataset", action="append", default=[], help="training dataset (Hub id or name) for the card"
    )
    parser.add_argument("--recipe", help="the training recipe file (YAML/JSON), shown in the card as is")
    parser.add_argument("--space", help="the Hub id of a demo Space serving the model (space/build_space.py), linked")
    parser.add_argument("--commit_message")
    parser.add_argument("--parity_atol", type=float, default=0.0, help="allowed max |difference| (default 0: exact)")
    parser.add_argument("--card_dir", default=str(CARD_DIR), help="where the published card is kept")
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        parser.error(f"--repo_id must be org/name, got {args.repo_id!r}")
    if args.recipe and not os.path.isfile(args.recipe):
        parser.error(f"--recipe: no such file {args.recipe}")
    if args.space and not is_hub_id(args.space):
        parser.error(f"--space must be the Hub id of a Space (org/name), got {args.space!r}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # 1. Results first: a malformed file should fail before minutes of export work.
    all_results = [load_results(path) for path in args.results]

    # 2. The reference implementation: the s2ca_hf classes, on the CPU in float32.
    model = S2CAModel.from_pretrained(args.model, dtype=torch.float32).eval()
    processor = S2CAProcessor.from_pretrained(args.model)

    # 3. The repository folder (a temporary one unless --dry_run), and the results checked against its weights.
    workdir = None
    if args.dry_run:
        folder = Path(args.dry_run)
    else:
        workdir = tempfile.mkdtemp(prefix="s2ca-push-")
        folder = Path(workdir) / args.repo_id.split("/")[-1]
    try:
        source_dir = args.model if os.path.isdir(args.model) else None
        weights_sha256 = write_repo_folder(model, processor, folder, source_dir)
        for results in all_results:
            check_results_for_model(results, weights_sha256)

        # 4. Parity: the folder as the Hub will serve it, loaded where s2ca_hf does not exist.
        differences = check_parity(model, processor, folder, atol=args.parity_atol)
        worst = max(differences.values(), default=0.0)
        print(f"Parity check passed: {len(differences)} outputs, largest absolute difference {worst:.3g}.")

        # 5. The card, from the results files.
        card = render_model_card(
            model,
            processor,
            args.repo_id,
            weights_sha256,
            all_results,
            revision=args.tag,
            license=args.license,
            base_model=args.base_model,
            datasets=args.dataset,
            recipe_path=args.recipe,
            parity_statement=parity_statement(differences),
            space=args.space,
        )
        card.save(folder / "README.md")
        summary = {
            "folder": str(folder),
            "sha256": weights_sha256,
            "files": sorted(p.name for p in folder.iterdir()),
            "parity": differences,
            "results": [results["_path"] for results in all_results],
        }
        if args.dry_run:
            print(f"Dry run: {folder} is ready and checked; nothing was uploaded.")
            return summary

        # 6. One commit (or pull request), tagged; then keep the card of the published checkpoint.
        commit = upload(
            folder,
            args.repo_id,
            tag=args.tag,
            revision=args.revision,
            create_pr=args.create_pr,
            private=args.private,
            commit_message=args.commit_message,
        )
        os.makedirs(args.card_dir, exist_ok=True)
        kept = Path(args.card_dir) / f"{args.repo_id.replace('/', '--')}.md"
        shutil.copyfile(folder / "README.md", kept)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        print(
            f"Uploaded {args.repo_id} at {commit.oid} ({commit.pr_url or commit.commit_url}), tag {args.tag}, {stamp}."
        )
        print(f"The card is kept in {kept}: commit it, and add it to {Path(args.card_dir) / 'README.md'}.")
        return {**summary, "commit": commit.oid, "pr_url": commit.pr_url, "card": str(kept)}
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except (ResultsError, ParityError, FileExistsError) as error:
        raise SystemExit(f"push_to_hub: {error}") from None

"""Writes a folder that deploys as a Hugging Face Space: the demo app, its Space card, its requirements and a copy of
the s2ca_hf package (a Space installs requirements.txt from PyPI, so the package travels as code beside the app).

    python space/build_space.py --out my-space --model org/s2ca-msrvtt [--push_to_hub org/s2ca-search]

With `--push_to_hub` the folder is uploaded as a Gradio Space and `--model` becomes its variable S2CA_MODEL; the app
then builds its example collection on first start. To search your own collection, add an index folder to the Space
and set S2CA_INDEX (and S2CA_VIDEOS_ROOT if its videos are elsewhere).
"""

import os
import re
import shutil
import sys

from s2ca_hf.utils import ArgumentParser, first_paragraph


SPACE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(SPACE), "s2ca_hf")
FILES = ("app.py", "README.md", "requirements.txt")


def build_space(out: str, model: str | None = None) -> str:
    """Writes the Space folder `out` (created; its previous app, card, requirements and package copy are replaced)
    and returns it. `model` is named in the card's `models:` so that the Hub links the Space to it."""
    os.makedirs(out, exist_ok=True)
    for name in FILES:
        shutil.copyfile(os.path.join(SPACE, name), os.path.join(out, name))
    package = os.path.join(out, "s2ca_hf")
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if model:
        card = os.path.join(out, "README.md")
        with open(card, encoding="utf-8") as f:
            text = f.read()
        # The card's header ends at its second "---" line; `models:` goes just before it.
        header_end = [m.start() for m in re.finditer(r"^---$", text, flags=re.M)][1]
        with open(card, "w", encoding="utf-8") as f:
            f.write(f"{text[:header_end]}models:\n- {model}\n{text[header_end:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=first_paragraph(__doc__))
    parser.add_argument("--out", required=True, help="the Space folder to write")
    parser.add_argument("--model", help="the model the Space serves: a Hub id (its variable S2CA_MODEL)")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="then upload the folder as this Gradio Space")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: a private Space")
    args = parser.parse_args(argv)
    if args.push_to_hub and not args.model:
        parser.error("--push_to_hub needs --model: the Hub id of the model the Space serves.")
    if args.model and os.path.exists(args.model):
        parser.error(f"--model {args.model} is a local folder; a Space loads its model from the Hub: give its id.")
    build_space(args.out, args.model)
    print(f"Wrote the Space to {args.out}.")
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        url = api.create_repo(
            args.push_to_hub, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True
        )
        api.add_space_variable(args.push_to_hub, "S2CA_MODEL", args.model)  # also updates an existing Space
        api.upload_folder(
            repo_id=args.push_to_hub, repo_type="space", folder_path=args.out, ignore_patterns=["examples/*"]
        )
        print(f"Uploaded to {url}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The child process of the parity check (`parity.check_parity` runs it): loads an exported folder as remote code,
where `s2ca_hf` cannot be imported, and saves its outputs on the parity input for the exporter to compare.

    python training/parity_child.py FOLDER WORK    # WORK holds spec.json and the videos; remote.pt is written there
"""

import sys


# Before anything else: with the package unimportable, everything must come from the folder's own code.
sys.modules["s2ca_hf"] = None

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from parity import model_outputs  # noqa: E402  (this script's folder, training/, is on sys.path)
from transformers import AutoModel, AutoProcessor, pipeline  # noqa: E402


def main(folder: str, work: str) -> None:
    with open(f"{work}/spec.json") as f:
        spec = json.load(f)
    videos = [np.load(path) for path in spec["videos"]]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    for obj in (model, processor, processor.video_processor):
        if not type(obj).__module__.startswith("transformers_modules"):
            raise SystemExit(f"{type(obj)} was not loaded from the folder's code")
    pipe = pipeline(model=folder, trust_remote_code=True)
    torch.save(model_outputs(model, processor, pipe, spec["texts"], videos), f"{work}/remote.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

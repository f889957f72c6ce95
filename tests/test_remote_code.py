"""The Hub custom-code path: a saved folder loads with trust_remote_code in a process that cannot import s2ca_hf."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from helpers import WITHOUT_S2CA, numbered_frames
from transformers.dynamic_module_utils import get_imports

import s2ca_hf
from s2ca_hf import S2CAModel
from s2ca_hf.tiny import tiny_config, tiny_processor
from s2ca_hf.video_io import write_video


MODEL_FILES = [
    "configuration_s2ca.py",
    "modeling_s2ca.py",
    "video_processing_s2ca.py",
    "frame_policy.py",
    "video_io.py",
    "processing_s2ca.py",
    "pipeline_s2ca.py",
    "handler.py",
]


def test_model_files_import_only_torch_transformers_torchvision_numpy():
    package = os.path.dirname(s2ca_hf.__file__)
    for name in MODEL_FILES:
        third_party = set(get_imports(os.path.join(package, name))) - set(sys.stdlib_module_names)
        assert third_party <= {"torch", "transformers", "torchvision", "numpy"}, (name, third_party)


def tiny_export(tmp_path):
    """A seeded tiny model and its processor, and the folder a plain `save_pretrained` of both writes (as training's
    final/ and best/ are written: importing s2ca_hf made it carry the code)."""
    processor = tiny_processor(str(tmp_path / "tokenizer"))
    torch.manual_seed(0)
    model = S2CAModel(tiny_config(vocab_size=len(processor.tokenizer), prototype_init_std=1.0)).eval()
    export = tmp_path / "export"
    model.save_pretrained(export)
    processor.save_pretrained(export)
    return model, processor, export


def test_trust_remote_code_round_trip_in_a_process_without_s2ca_hf(tmp_path):
    model, processor, export = tiny_export(tmp_path)
    for name in MODEL_FILES:  # the pipeline's file too: any saved model is a pipeline
        assert (export / name).is_file(), name
    config = json.loads((export / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_s2ca.S2CAModel"
    assert config["custom_pipelines"]["video-text-retrieval"]["impl"] == "pipeline_s2ca.VideoTextRetrievalPipeline"

    video_path = write_video(str(tmp_path / "clip.mp4"), num_frames=25, fps=10)
    np.save(tmp_path / "frames.npy", numbered_frames(9))
    texts = ["the dog", "a cat runs fast"]
    inputs = processor(text=texts, videos=[numbered_frames(9), video_path], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs)
    torch.save(
        {
            **{k: v for k, v in inputs.items()},
            "logits": expected.logits_per_text,
            "phi": expected.text_embeds,
            "psi": expected.video_embeds,
        },
        tmp_path / "expected.pt",
    )

    child = WITHOUT_S2CA + textwrap.dedent(
        f"""
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(export)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(export)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(processor.video_processor).__name__ == "S2CAVideoProcessor"
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        inputs = processor(text={texts!r}, videos=[np.load({str(tmp_path / "frames.npy")!r}), {video_path!r}],
                           return_tensors="pt")
        for key in ("input_ids", "attention_mask", "pixel_values_videos", "frame_mask"):
            assert torch.equal(inputs[key], expected[key]), key
        with torch.no_grad():
            out = model(**inputs)
        assert torch.equal(out.logits_per_text, expected["logits"])
        assert torch.equal(out.text_embeds, expected["phi"]) and torch.equal(out.video_embeds, expected["psi"])
        from transformers import pipeline
        pipe = pipeline(model={str(export)!r}, trust_remote_code=True)  # a plain saved folder is a pipeline too
        ranked = pipe({video_path!r}, candidate_labels={texts!r})
        assert sorted(r["label"] for r in ranked) == sorted({texts!r}), ranked
        again = AutoModel.from_pretrained({str(export)!r}, trust_remote_code=True)
        again.save_pretrained({str(tmp_path / "saved_again")!r})  # saved from the remote code: still a pipeline
        pipeline(model={str(tmp_path / "saved_again")!r}, trust_remote_code=True, processor=processor)
        print("REMOTE-CODE-OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-CODE-OK" in result.stdout
    assert "are not S2CA fields" not in result.stderr  # the package's own export trips no unknown-key warning


def test_the_endpoint_handler_serves_an_export_in_a_process_without_s2ca_hf(tmp_path):
    import base64

    model, processor, export = tiny_export(tmp_path)
    assert (export / "handler.py").is_file()
    first = write_video(str(tmp_path / "first.mp4"), num_frames=25, fps=10)
    second = write_video(str(tmp_path / "second.mp4"), num_frames=15, fps=5, size=40)
    texts = ["the dog", "a cat runs fast"]
    inputs = processor(text=texts, videos=[first, second], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_text
    encoded = base64.b64encode(open(second, "rb").read()).decode()  # the second video as bytes, not a path
    child = WITHOUT_S2CA + textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(export)!r})
        from handler import EndpointHandler
        handler = EndpointHandler({str(export)!r})
        out = handler({{"inputs": {{"text": {texts!r}, "videos": [{first!r}, {encoded!r}]}}}})
        print(json.dumps(out))
        no_text = {{"inputs": {{"text": [], "videos": [{first!r}]}}}}
        for bad in (no_text, {{"inputs": {{"text": ["a"], "videos": ["%%%"]}}}}):
            try:
                handler(bad)
            except ValueError as error:
                print("REFUSED", error)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    out = json.loads(lines[0])
    torch.testing.assert_close(torch.tensor(out["logits_per_text"]), expected, atol=1e-4, rtol=1e-4)
    for t, ranked in enumerate(out["text_to_video"]):
        assert [r["video"] for r in ranked] == expected[t].argsort(descending=True).tolist()
        assert abs(sum(r["score"] for r in ranked) - 1) < 1e-5
    assert [r["text"] for r in out["video_to_text"][1]] == expected[:, 1].argsort(descending=True).tolist()
    assert 'REFUSED "inputs.text" must be a non-empty list' in lines[1]
    assert "REFUSED Video 0 is neither an http(s) URL, a file here, nor base64 bytes." in lines[2]

"""benchmarks/search_two_stage.py at tiny sizes: a real index of generated clips, the first-stage grid measured
against exact search, and generated collections written as index folders and searched in child processes."""

import argparse
import json

import pytest
import search_two_stage
import torch
from index_helpers import video_name

from s2ca_hf.retrieval.index import VideoIndex


pytest.importorskip("faiss")
pytest_plugins = ["index_helpers"]  # saved_model, video_folder


def test_recall_counts_ties_at_the_kth_place_as_hits():
    exact = torch.tensor([[5.0, 4.0, 3.0], [2.0, 2.0, 2.0]])
    assert search_two_stage.recall_at_k(exact, exact) == 1.0
    # Query 0 misses its third hit; query 1 returns other rows of the same score: not a miss.
    found = torch.tensor([[5.0, 4.0, 2.5], [2.0, 2.0, 2.0]])
    assert search_two_stage.recall_at_k(found, exact) == pytest.approx((2 / 3 + 1) / 2)


@pytest.mark.slow  # about 40 s on 2 cores: it builds an index and generated collections, each searched in a process
def test_two_stage_section_measures_a_real_index_and_generated_collections(saved_model, video_folder, tmp_path):
    captions = tmp_path / "MSRVTT_data.json"
    sentences = [{"caption": f"clip {i} shows {word}", "video_id": video_name(i)} for i in range(6) for word in "ab"]
    captions.write_text(json.dumps({"sentences": sentences}))
    parser = argparse.ArgumentParser()
    search_two_stage.add_arguments(parser)
    parser.add_argument("-k", type=int, default=3)
    args = parser.parse_args(
        ["--model", saved_model, "--videos", str(video_folder), "--captions", str(captions), "--queries", "8"]
        + ["--real-candidates", "2", "6", "--large", "2500:spectrum", "2500:isotropic", "--singles", "2"]
        + ["--settings", "40:1:16", "--rank", "4", "--work", str(tmp_path / "work"), "--keep"]
    )
    section = search_two_stage.run(args)
    assert section["real_index"]["videos"] == 6 and section["real_index"]["queries"] == 8
    real = {(r["projection"], r["factory"], r["candidates"]): r["recall_at_10"] for r in section["real"]}
    assert len(real) == 2 * 2  # Flat only: 6 videos are too few for the IVF-PQ codebooks
    assert real["instance", "Flat", 6] == 1.0 and real["svd", "Flat", 6] == 1.0  # every video a candidate: exact
    assert all(0.0 <= recall <= 1.0 for recall in real.values())

    spectrum, isotropic = section["large"]
    assert spectrum["vectors"] == isotropic["vectors"] == 2500 and spectrum["factory"] == "Flat"
    assert spectrum["spectrum"]["rank"] == 4 and 0 < spectrum["spectrum"]["explained_variance"] <= 1
    for row in (spectrum, isotropic):
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["queries_per_s_batch_64"] > 0 and row["peak_rss_gib"] > 0
        assert (
            row["build_peak_rss_gib"] >= row["build_peak_anon_gib"] > 0
            and row["queries_per_s_batch_64_first_pass"] > 0
        )
    # The generated collection is a real index folder whose vectors follow the real index's mean.
    real_index = VideoIndex.load(tmp_path / "work" / "real-index", device="cpu")
    generated = VideoIndex.load(tmp_path / "work" / "spectrum-2500", device="cpu")
    assert generated.dimension == real_index.dimension and len(generated) == 2500
    scale = real_index.vectors.std(0).mean()
    assert (generated.vectors.mean(0) - real_index.vectors.mean(0)).abs().max() < scale
    lines = search_two_stage.markdown_lines(section, 3)
    assert any("generated (spectrum), 2,500 rows" in line for line in lines)

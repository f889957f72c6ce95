"""Two-stage search (`s2ca_hf.retrieval.two_stage`): a compressed first stage proposes candidates, re-scored exactly
from the memory-mapped shards; equal to exact search whenever the exact top-k is among the candidates."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from index_helpers import add_videos

from s2ca_hf.retrieval import two_stage
from s2ca_hf.retrieval.cli import index_main, search_main
from s2ca_hf.retrieval.errors import VideoIndexError
from s2ca_hf.retrieval.index import VideoIndex
from s2ca_hf.retrieval.search import exact_search
from s2ca_hf.retrieval.store import read_manifest, write_vector_index


pytest.importorskip("faiss")
pytest_plugins = ["index_helpers"]  # saved_model, video_folder

D, K = 32, 4  # psi = [v (D) ; K concept blocks (D each)], as with usage weights
E = D * (1 + K)


def structured_vectors(count: int, seed: int) -> torch.Tensor:
    """Clustered vectors with a decaying spectrum, as real psi are (isotropic noise is no collection)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(40, E, generator=generator)
    scales = torch.linspace(1.0, 0.05, E)
    members = centres[torch.randint(0, 40, (count,), generator=generator)]
    vectors = members + 0.4 * torch.randn(count, E, generator=generator)
    return vectors * scales


def synthetic_settings(dimension: int = E, projection_dim: int = D, weights: str = "0" * 64) -> dict:
    fingerprint = {
        "name_or_path": "generated",
        "class": "S2CAModel",
        "config_sha256": "0" * 64,
        "weights_sha256": weights,
        "dimension": dimension,
        "projection_dim": projection_dim,
    }
    return {"model": fingerprint, "encoding_dtype": "float32", "frame_policy": {}, "source": {}, "windows": None}


def write_index(folder, vectors: torch.Tensor, shard_rows: int = 700, weights: str = "0" * 64) -> str:
    chunks = (
        ([{"id": f"video-{i}", "path": f"/videos/{i}.mp4"} for i in range(s, min(s + shard_rows, len(vectors)))],
         vectors[s : s + shard_rows])
        for s in range(0, len(vectors), shard_rows)
    )  # fmt: skip
    write_vector_index(str(folder), chunks, synthetic_settings(weights=weights))
    return str(folder)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = write_index(tmp_path_factory.mktemp("generated") / "idx", structured_vectors(3000, seed=0))
    queries = structured_vectors(50, seed=1)
    return path, queries


def exact(path, queries, k=10):
    return exact_search(queries, VideoIndex.load(path, device="cpu").vectors, k)


def test_mapped_shards_read_the_stored_vectors_and_refuse_a_changed_shard(generated, tmp_path):
    path, _ = generated
    index = VideoIndex.load(path, device="cpu")
    shards = two_stage.MappedShards(path, index.manifest)
    rows = np.array([2999, 0, 1500, 701, 699, 0])  # across shards, unsorted, a repeat
    assert np.array_equal(shards.gather(rows), index.vectors[torch.from_numpy(rows)].numpy())

    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    shard = copy / read_manifest(copy)["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # one byte of the last vector
    shard.write_bytes(bytes(data))
    with pytest.raises(VideoIndexError, match="does not match the checksum"):
        two_stage.MappedShards(str(copy), read_manifest(copy))


def test_mapped_shards_score_each_query_against_its_own_rows_from_every_shard(generated):
    path, queries = generated
    index = VideoIndex.load(path, device="cpu")
    shards = two_stage.MappedShards(path, index.manifest)
    rows = np.array([[2999, 0, 1500, 701, -1, 699], [5, 5, 2100, -1, -1, 1400], [699, 700, 1, 2, 3, 2998]])
    scores = shards.score(queries[:3], rows)
    psi = index.vectors.float()
    for q in range(3):
        for c in range(rows.shape[1]):
            want = -np.inf if rows[q, c] < 0 else float(psi[rows[q, c]] @ queries[q])
            assert scores[q, c].item() == pytest.approx(want, rel=1e-5, abs=1e-5), (q, c)
    threads = torch.get_num_threads()
    shards.score(queries[:1], rows[:1])
    assert torch.get_num_threads() == threads


def test_flat_first_stage_with_every_row_as_candidate_is_exact_search(generated, tmp_path):
    path, queries = generated
    copy = shutil.copytree(path, tmp_path / "flat")
    index = VideoIndex.load(copy, device="cpu")
    stage = index.build_first_stage(factory="Flat", candidates=len(index), progress=False)
    assert stage.settings["factory"] == "Flat" and "nprobe" not in stage.settings
    scores, rows = index.search_vectors(queries, k=10)
    want_scores, want_rows = exact(copy, queries)
    assert torch.equal(rows, want_rows)
    torch.testing.assert_close(scores, want_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("projection", ["instance", "svd"])
def test_compressed_first_stage_equals_exact_where_the_top_k_is_among_its_candidates(generated, tmp_path, projection):
    path, queries = generated
    copy = shutil.copytree(path, tmp_path / projection)
    index = VideoIndex.load(copy, device="cpu")
    factory = "IVF32,PQ16x4fs,Refine(SQ8)"  # what auto gives past 20,000 rows, with fewer lists
    stage = index.build_first_stage(factory, projection=projection, dims=D, candidates=300, nprobe=16, progress=False)
    assert stage.settings["bytes_per_video"] == D / 4 + 8 + D  # fast-scan codes, the row id, the refining codes
    assert stage.faiss_index.k_factor == stage.settings["refine_k_factor"] == two_stage.REFINE_K_FACTOR
    scores, rows = index.search_vectors(queries, k=10)
    want_scores, want_rows = exact(copy, queries)
    candidates = stage.candidates(queries, 300)
    covered = 0
    for q in range(len(queries)):
        if set(want_rows[q].tolist()) <= set(candidates[q].tolist()):
            covered += 1
            assert rows[q].tolist() == want_rows[q].tolist()
            torch.testing.assert_close(scores[q], want_scores[q], rtol=1e-5, atol=1e-5)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(rows, want_rows)])
    assert covered >= 10 and recall >= 0.8, (covered, recall)
    # The scores are exact ones: every returned score is that row's float32 inner product.
    direct = torch.einsum("qe,qke->qk", queries, index.vectors[rows])
    torch.testing.assert_close(scores, direct, rtol=1e-5, atol=1e-5)


def test_auto_factory_is_flat_for_small_collections_and_ivf_fast_scan_pq_past_them():
    assert two_stage.auto_factory(3000, 128) == "Flat"
    assert two_stage.auto_factory(1_000_000, 128) == "IVF2048,PQ64x4fs,Refine(SQ8)"
    assert two_stage.auto_factory(10_000_000, 512) == "IVF8192,PQ256x4fs,Refine(SQ8)"


def test_svd_projection_is_orthonormal_and_instance_keeps_the_first_d_values():
    sample = structured_vectors(500, seed=3)
    p = two_stage.projection_matrix(sample, "svd", 16, D)
    torch.testing.assert_close(p.t() @ p, torch.eye(16), atol=1e-5, rtol=0)
    q = two_stage.projection_matrix(sample, "instance", D, D)
    assert torch.equal(sample @ q, sample[:, :D])
    with pytest.raises(ValueError, match="instance dimensions"):
        two_stage.projection_matrix(sample, "instance", 16, D)


def test_a_stale_or_damaged_first_stage_is_refused_naming_the_rebuild(generated, tmp_path):
    path, queries = generated
    copy = str(shutil.copytree(path, tmp_path / "stale"))
    VideoIndex.load(copy, device="cpu").build_first_stage(factory="Flat", progress=False)
    settings_file = os.path.join(copy, "first_stage", "settings.json")
    settings = json.load(open(settings_file))
    json.dump({**settings, "count": 2000}, open(settings_file, "w"))
    with pytest.raises(VideoIndexError, match="other contents.*s2ca-index --first-stage"):
        VideoIndex.load(copy, device="cpu").search(queries[:1])
    # --exact still works on it: the full scan does not need the first stage.
    assert len(VideoIndex.load(copy, device="cpu").search(queries[:1], backend="exact")[0]) == 10
    json.dump(settings, open(settings_file, "w"))
    os.remove(os.path.join(copy, "first_stage", "faiss.index"))
    with pytest.raises(VideoIndexError, match="cannot be read"):
        VideoIndex.load(copy, device="cpu").search(queries[:1])


def test_a_first_stage_is_bound_to_the_model_and_to_its_bytes(generated, tmp_path):
    path, queries = generated
    copy = str(shutil.copytree(path, tmp_path / "bound"))
    (tmp_path / "bound" / "first_stage.999999999.tmp").mkdir()  # left by a killed build (no such process)
    VideoIndex.load(copy, device="cpu").build_first_stage(factory="IVF16,Flat", dims=D, progress=False)
    assert not (tmp_path / "bound" / "first_stage.999999999.tmp").exists()
    folder = tmp_path / "bound" / "first_stage"
    for name in ("faiss.index", "projection.safetensors", "settings.json"):  # one mode for every index file
        assert (folder / name).stat().st_mode & 0o777 == (tmp_path / "bound" / "manifest.json").stat().st_mode & 0o777
    # The same videos indexed by another model (same ids, so the same content id): its first stage is refused.
    other = write_index(tmp_path / "other", structured_vectors(3000, seed=5), weights="1" * 64)
    assert read_manifest(other)["content_id"] == read_manifest(copy)["content_id"]
    shutil.copytree(folder, os.path.join(other, "first_stage"))
    with pytest.raises(VideoIndexError, match="another model's vectors.*s2ca-index --first-stage"):
        VideoIndex.load(other, device="cpu").search(queries[:1])
    # Flipped bytes in the FAISS file: refused, naming it (they changed the candidates, and so the top-k).
    data = bytearray((folder / "faiss.index").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "faiss.index").write_bytes(bytes(data))
    with pytest.raises(VideoIndexError, match="faiss.index is not the file written with the settings .damaged"):
        VideoIndex.load(copy, device="cpu").search(queries[:1])


def test_an_index_without_first_stage_searches_exactly_and_refuses_two_stage(generated):
    path, queries = generated
    index = VideoIndex.load(path, device="cpu")
    assert index.first_stage is None
    scores, rows = index.search_vectors(queries, k=5)  # backend "auto"
    assert torch.equal(rows, exact(path, queries, k=5)[1])
    with pytest.raises(VideoIndexError, match="has no first stage"):
        index.search_vectors(queries, k=5, backend="two_stage")
    with pytest.raises(ValueError, match="candidates applies to the two-stage search"):
        index.search_vectors(queries, k=5, backend="exact", candidates=10)


def test_index_command_builds_the_first_stage_and_keeps_it_up_to_date(saved_model, video_folder, tmp_path, capsys):
    folder = tmp_path / "videos"
    shutil.copytree(video_folder, folder)
    out = str(tmp_path / "idx")
    arguments = ["--model", saved_model, "--videos", str(folder), "--out", out, "--quiet"]
    assert index_main([*arguments, "--first-stage", "--first-stage-factory", "Flat", "--candidates", "3"]) == 0
    settings = two_stage.first_stage_settings(out)
    assert settings["count"] == len(VideoIndex.load(out)) and settings["candidates"] == 3
    add_videos(folder, [6, 7])
    capsys.readouterr()
    assert index_main(arguments) == 0  # videos added: the first stage is rebuilt with its own settings
    assert "rebuilding the first stage (Flat)" in capsys.readouterr().out
    rebuilt = two_stage.first_stage_settings(out)
    assert rebuilt["count"] == settings["count"] + 2 and rebuilt["candidates"] == 3
    assert rebuilt["content_id"] == read_manifest(out)["content_id"]

    for extra in ([], ["--exact"], ["--candidates", "8"]):
        assert search_main(["--index", out, "the dog", "-k", "3", "--json", *extra]) == 0
    outputs = capsys.readouterr().out.strip().splitlines()
    # Three candidates of a Flat first stage over 8 videos: the top-3 of the instance score, re-scored with the full
    # score; with all 8 as candidates it is exact search.
    hits = [[hit["id"] for hit in json.loads(line)["results"][0]["hits"]] for line in outputs]
    assert hits[2] == hits[1] and len(hits[0]) == 3
    with pytest.raises(SystemExit):
        search_main(["--index", out, "the dog", "--exact", "--candidates", "8"])


def test_an_index_from_before_the_first_stage_gets_one(saved_model, video_folder, tmp_path):
    out = str(tmp_path / "old")
    assert index_main(["--model", saved_model, "--videos", str(video_folder), "--out", out, "--quiet"]) == 0
    manifest_file = os.path.join(out, "manifest.json")
    manifest = json.load(open(manifest_file))
    del manifest["model"]["projection_dim"]  # what an index written before the two-stage search records
    json.dump(manifest, open(manifest_file, "w"))
    index = VideoIndex.load(out, device="cpu")
    assert index.first_stage is None and len(index.search("the cat", k=2)[0]) == 2
    stage = index.build_first_stage(factory="Flat", progress=False)  # D read from the model's config
    assert stage.projection.shape == (index.dimension, 32)  # the tiny model's projection_dim


def test_milvus_lite_first_stage_gives_the_faiss_first_stage_results(generated, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from s2ca_hf.retrieval.milvus import MilvusFirstStage

    path, queries = generated
    copy = str(shutil.copytree(path, tmp_path / "milvus"))
    index = VideoIndex.load(copy, device="cpu")
    uri = str(tmp_path / "first-stage.db")
    for projection in ("instance", "svd"):
        # Exact inner products in both first stages (FAISS Flat, Milvus FLAT): the same parameters, the same answer.
        faiss_stage = index.build_first_stage(factory="Flat", projection=projection, dims=D, candidates=50)
        want_scores, want_rows = index.search_vectors(queries, k=10)
        milvus_stage = MilvusFirstStage.build(
            index, uri, f"videos_{projection}", "FLAT", projection=projection, dims=D, candidates=50
        )
        torch.testing.assert_close(milvus_stage.projection, faiss_stage.projection, rtol=0, atol=0)
        found = milvus_stage.candidates(queries, 50)
        expected = faiss_stage.candidates(queries, 50)
        agree = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(found.tolist(), expected.tolist())])
        assert agree >= 0.99, agree  # float rounding may swap a near-tie at the 50th place
        index.attach_first_stage(milvus_stage)
        scores, rows = index.search_vectors(queries, k=10)
        assert torch.equal(rows, want_rows)
        torch.testing.assert_close(scores, want_scores)

    reopened = MilvusFirstStage.open(index, uri, "videos_svd")
    assert reopened.settings["index_type"] == "FLAT" and np.array_equal(
        reopened.candidates(queries, 50), MilvusFirstStage.open(index, uri, "videos_svd").candidates(queries, 50)
    )
    with pytest.raises(VideoIndexError, match="exists"):
        MilvusFirstStage.build(index, uri, "videos_svd", "FLAT")
    other = VideoIndex.load(path, device="cpu")
    other.manifest = {**other.manifest, "content_id": "changed"}
    with pytest.raises(VideoIndexError, match="other contents"):
        MilvusFirstStage.open(other, uri, "videos_svd")
    other.manifest = {**index.manifest, "model": {**index.manifest["model"], "weights_sha256": "1" * 64}}
    with pytest.raises(VideoIndexError, match="another model's vectors"):
        MilvusFirstStage.open(other, uri, "videos_instance")  # the instance projection is the same for any model
    # A collection whose vectors are not of the dimension its settings say: refused, naming it.
    from pymilvus import DataType, MilvusClient

    from s2ca_hf.retrieval import milvus

    client = MilvusClient(uri=uri)
    properties = client.describe_collection("videos_svd")["properties"]
    schema = client.create_schema(auto_id=False)
    schema.add_field(milvus.ROW_FIELD, DataType.INT64, is_primary=True)
    schema.add_field(milvus.VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=D + 2)
    client.create_collection("videos_wide", schema=schema, properties=properties)
    with pytest.raises(VideoIndexError, match="collection 'videos_wide' at .* dimension 34, its settings say 32"):
        MilvusFirstStage.open(index, uri, "videos_wide")


def test_an_ivf_first_stage_visits_an_eighth_of_its_lists_by_default(generated, tmp_path):
    path, _ = generated
    copy = shutil.copytree(path, tmp_path / "nprobe")
    stage = VideoIndex.load(copy, device="cpu").build_first_stage("IVF32,PQ16x4fs", dims=D, progress=False)
    assert stage.settings["nprobe"] == 32 // two_stage.NPROBE_SHARE == 4


def test_a_rebuild_after_growth_derives_nprobe_again_unless_it_was_asked_for(generated, tmp_path):
    path, _ = generated
    copy = shutil.copytree(path, tmp_path / "grow")
    index = VideoIndex.load(copy, device="cpu")
    derived = index.build_first_stage("IVF32,PQ16x4fs", dims=D, progress=False).settings
    options = two_stage.rebuild_options(derived)
    assert options["nprobe"] is None and options["factory"] == "IVF32,PQ16x4fs"
    # The grown index's rebuild has twice the lists (as "auto" gives past a size): it visits twice as many.
    grown = index.build_first_stage(**{**options, "factory": "IVF64,PQ16x4fs"}, progress=False).settings
    assert grown["nprobe"] == 64 // two_stage.NPROBE_SHARE == 8
    asked = index.build_first_stage("IVF32,PQ16x4fs", dims=D, nprobe=3, progress=False).settings
    assert two_stage.rebuild_options(asked)["nprobe"] == 3
    older = {k: v for k, v in derived.items() if k != "requested_nprobe"}  # written before the key existed
    assert two_stage.rebuild_options(older)["nprobe"] is None


def test_a_single_query_searches_the_first_stage_with_one_thread(generated, tmp_path, monkeypatch):
    # FAISS spreads a batch over threads query by query: for one query its other threads only spin, and several
    # searching processes then take the cores from each other. One thread per query, FAISS's default restored after.
    import faiss

    from s2ca_hf.retrieval import search

    path, queries = generated
    copy = str(shutil.copytree(path, tmp_path / "threads"))
    index = VideoIndex.load(copy, device="cpu")
    index.build_first_stage("IVF16,Flat", dims=D, progress=False)
    default = faiss.omp_get_max_threads()
    real_set, settings = faiss.omp_set_num_threads, []
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: settings.append(n) or real_set(n))
    for batch in (1, 3, len(queries)):
        settings.clear()
        index.search_vectors(queries[:batch], k=5)
        assert settings == [min(batch, default), default], batch  # set for the search, then restored
    assert faiss.omp_get_max_threads() == default
    assert search.faiss_threads(1) == 1 and search.faiss_threads(10**6) == default

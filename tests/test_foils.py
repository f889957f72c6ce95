"""Caption foils as extra negative texts: the collator draws one per row (the same one wherever and whenever the row is
collated in an epoch), the loss scores it against every video in the video-to-text softmax only, a row without a foil
adds nothing, and two processes compute what one does over the same global batch."""

import json

import datasets
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import make_inputs
from helpers import free_port
from losses import S2CALoss
from test_losses import also_correct, build_model, expected_retrieval_loss, reference_contrastive_loss

from s2ca_hf.data import VideoTextCollator
from s2ca_hf.modeling_s2ca import contrastive_loss
from s2ca_hf.tiny import IMAGE_SIZE, NUM_FRAMES


class StubFrameCache:
    """The two things the collator asks of a frame cache, without any video."""

    failed: dict = {}

    def video_inputs(self, video_ids, processor) -> dict:
        return {
            "pixel_values_videos": torch.zeros(len(video_ids), NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE),
            "frame_mask": torch.ones(len(video_ids), NUM_FRAMES, dtype=torch.long),
        }


def foil_rows() -> datasets.Dataset:
    # Short texts: the tiny tokenizer spells words out and keeps 14 characters.
    return datasets.Dataset.from_dict(
        {
            "video_id": ["v0", "v0", "v1", "v2"],
            "video_index": [0, 0, 1, 2],
            "text": ["red ball left", "ball red left", "blue cube", "green star"],
            "foils": [
                ["red ball right", "blue ball left", "red ball up"],
                ["ball red right", "ball blue left", "ball red down"],
                [],
                ["red star", "blue star", "green ball"],
            ],
        }
    )


def collate(processor, rows, epoch: int = 0, seed: int = 0, **kwargs) -> dict:
    collator = VideoTextCollator(
        processor, frame_cache=StubFrameCache(), seed=seed, **{"return_foils": True, **kwargs}
    )
    collator.set_epoch(epoch)
    return collator(list(rows))


def tokens(input_ids, attention_mask) -> list[list[int]]:
    """Each row's token ids without padding (batches pad to their longest row)."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]


def drawn_foils(processor, batch, rows) -> list[str | None]:
    """Which of its row's foils each foil slot holds (`None` for a masked slot)."""
    drawn = tokens(batch["foil_input_ids"], batch["foil_attention_mask"])
    found = []
    for row, ids, real in zip(rows, drawn, batch["foil_mask"].tolist()):
        if not real:
            found.append(None)
            continue
        candidates = processor(text=row["foils"], return_tensors="pt")
        candidates = tokens(candidates["input_ids"], candidates["attention_mask"])
        matches = [foil for foil, c in zip(row["foils"], candidates) if c == ids]
        assert len(matches) == 1, (row, ids)
        found.append(matches[0])
    return found


# --- the collator ------------------------------------------------------------------------------------------------


def test_the_collator_draws_one_of_each_rows_foils_and_masks_a_row_without_any(processor):
    rows = list(foil_rows())
    batch = collate(processor, rows)
    assert batch["foil_input_ids"].shape[0] == batch["foil_attention_mask"].shape[0] == 4
    assert batch["foil_mask"].tolist() == [1, 1, 0, 1]
    found = drawn_foils(processor, batch, rows)
    assert found[2] is None and all(foil in row["foils"] for foil, row in zip(found, rows) if foil)
    # The captions are untouched by the foils.
    captions = processor(text=[row["text"] for row in rows], return_tensors="pt")
    assert tokens(batch["input_ids"], batch["attention_mask"]) == tokens(
        captions["input_ids"], captions["attention_mask"]
    )


def test_a_rows_foil_depends_on_seed_epoch_and_row_only(processor):
    rows = list(foil_rows())
    by_epoch = [drawn_foils(processor, collate(processor, rows, epoch=epoch), rows) for epoch in range(6)]
    assert by_epoch[0] == drawn_foils(processor, collate(processor, rows, epoch=0), rows)  # a new collator, same draw
    assert len({tuple(found) for found in by_epoch}) > 1  # a new draw each epoch
    # The same foil whatever else is in the batch, in whichever order: a resumed run, or a data-loader worker,
    # collating the row draws what the uninterrupted run did.
    alone = drawn_foils(processor, collate(processor, rows[3:], epoch=2), rows[3:])
    reordered = drawn_foils(processor, collate(processor, rows[::-1], epoch=2), rows[::-1])
    assert alone[0] == by_epoch[2][3] and reordered[::-1] == by_epoch[2]
    other_seed = [drawn_foils(processor, collate(processor, rows, epoch=e, seed=1), rows) for e in range(6)]
    assert other_seed != by_epoch


def test_no_foil_keys_without_the_column_or_the_switch(processor):
    rows = list(foil_rows())
    assert "foil_input_ids" not in collate(processor, rows, return_foils=False)
    assert "foil_input_ids" not in collate(processor, [{k: v for k, v in r.items() if k != "foils"} for r in rows])


# --- the loss ----------------------------------------------------------------------------------------------------


def test_foils_are_extra_columns_of_the_video_to_text_softmax_only():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4 + 3, 4, generator=generator) * 3  # 4 texts, then 3 foils, against 4 videos
    foil_mask = torch.tensor([1, 0, 1])
    loss = contrastive_loss(logits, foil_mask=foil_mask)
    # Written out (foils are not queries: no text-to-video row of theirs).
    assert torch.allclose(loss, reference_contrastive_loss(logits, range(4), foil_mask.tolist()), atol=1e-6)
    assert not torch.allclose(loss, contrastive_loss(logits[:4]), atol=1e-3)
    # The masked foil takes no part: the loss of the other two alone, whatever its logits.
    without = contrastive_loss(logits[[0, 1, 2, 3, 4, 6]], foil_mask=torch.tensor([1, 1]))
    assert torch.allclose(loss, without, atol=1e-6)
    logits[5] = 1e4
    assert torch.allclose(contrastive_loss(logits, foil_mask=foil_mask), without, atol=1e-6)
    with pytest.raises(ValueError, match="foil_mask"):
        contrastive_loss(logits)  # foils' rows without their mask


@pytest.mark.parametrize("kind", ["residual", "combined", "separate", "separate+combined"])
def test_every_retrieval_loss_kind_scores_foils_as_it_scores_texts(kind):
    model = build_model(retrieval_loss=kind)
    generator = torch.Generator().manual_seed(1)
    instance, concept = torch.randn(2, 4 + 4, 4, generator=generator) * 0.3
    scale, foil_mask, videos = torch.tensor(20.0), torch.tensor([1, 1, 0, 1]), [0, 1, 1, 2]
    loss = model.retrieval_loss(instance, concept, scale=scale, also_correct=also_correct(videos), foil_mask=foil_mask)
    expected = expected_retrieval_loss(model, instance, concept, scale, videos, foil_mask.tolist())
    assert torch.allclose(loss, expected, atol=1e-5)


def foil_batch(batch: int = 4):
    """Inputs whose rows 0 and 2 are captions of one video, and one foil per row, row 1's masked."""
    videos = [0, 1, 0, 2][:batch]
    inputs = make_inputs(batch=batch)
    rows = torch.tensor([videos.index(video) for video in videos])
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"][rows]
    inputs["frame_mask"] = inputs["frame_mask"][rows]
    foil_inputs = make_inputs(batch=batch, seed=5)
    foils = {
        "foil_input_ids": foil_inputs["input_ids"],
        "foil_attention_mask": foil_inputs["attention_mask"],
        "foil_mask": torch.tensor([1, 0, 1, 1][:batch]),
    }
    return inputs, foils, torch.tensor(videos)


@pytest.mark.parametrize(
    "overrides", [{}, {"use_concepts": False}, {"allocation": "expert_choice", "late_interaction_weight": 0.5}]
)
def test_the_global_loss_encodes_the_foils_and_scores_them_in_the_instance_and_concept_scores(overrides):
    model = build_model(**overrides)
    inputs, foils, videos = foil_batch()
    outputs = model(**inputs)
    result = S2CALoss()(model, outputs, video_index=videos, **foils)
    # By hand: the foils encoded as texts after the batch's own, scored like them, rows 4.. of the similarities.
    texts = model.encode_text(
        torch.cat([inputs["input_ids"], foils["foil_input_ids"]]),
        torch.cat([inputs["attention_mask"], foils["foil_attention_mask"]]),
    )
    instance, concept = model.similarities(
        texts, model.encode_video(inputs["pixel_values_videos"], inputs["frame_mask"])
    )
    scale = model.logit_scale_value()
    expected = expected_retrieval_loss(model, instance, concept, scale, videos.tolist(), foils["foil_mask"].tolist())
    assert torch.allclose(result.retrieval, expected, atol=1e-5)
    without = S2CALoss()(model, outputs, video_index=videos)
    assert not torch.allclose(result.retrieval, without.retrieval, atol=1e-3)
    # Every foil masked: the loss without foils.
    masked = S2CALoss()(model, outputs, video_index=videos, **{**foils, "foil_mask": torch.zeros(4, dtype=torch.long)})
    assert torch.allclose(masked.value, without.value, atol=1e-6)
    # The foils train the text tower: their gradient reaches it.
    model.zero_grad()
    S2CALoss()(model, model(**inputs), video_index=videos, **foils).loss.backward()
    with_foils = model.text_projection.weight.grad.clone()
    model.zero_grad()
    S2CALoss()(model, model(**inputs), video_index=videos).loss.backward()
    assert not torch.allclose(with_foils, model.text_projection.weight.grad, atol=1e-6)


# --- two processes -----------------------------------------------------------------------------------------------


def gradients(model) -> dict:
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def two_process_worker(rank: int, port: int, output: str) -> None:
    """One of two processes of a DDP run over `foil_batch`, two rows each; rank 0 compares with one process."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    overrides = {"allocation": "expert_choice", "late_interaction_weight": 0.5}
    inputs, foils, videos = foil_batch()
    local = slice(2 * rank, 2 * rank + 2)
    model = build_model(**overrides)
    wrapped = torch.nn.parallel.DistributedDataParallel(model)
    # The foils are encoded outside DDP's forward, with the unwrapped model, as the training script does.
    result = S2CALoss(rank=rank, world_size=2)(
        model,
        wrapped(**{key: value[local] for key, value in inputs.items()}),
        video_index=videos[local],
        **{key: value[local] for key, value in foils.items()},
    )
    result.loss.backward()
    if rank == 0:
        reference = build_model(**overrides)
        expected = S2CALoss()(reference, reference(**inputs), video_index=videos, **foils)
        expected.loss.backward()
        ours, theirs = gradients(model), gradients(reference)
        report = {
            "loss": float(result.value),
            "expected_loss": float(expected.value),
            "same_keys": sorted(ours) == sorted(theirs),
            # Relative to each gradient's size: some are in the hundreds, where float32 sums in another order differ
            # in the fifth decimal.
            "max_grad_diff": max(
                float((ours[name] - theirs[name]).abs().max() / theirs[name].abs().max().clamp(min=1.0))
                for name in theirs
            ),
        }
        with open(output, "w") as f:
            json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_with_foils_and_repeated_videos_equal_one_process(tmp_path):
    # Fresh processes (spawn), not forks of this one: forking after torch ran can deadlock its thread pools.
    output = tmp_path / "report.json"
    mp.spawn(two_process_worker, args=(free_port(), str(output)), nprocs=2)
    report = json.loads(output.read_text())
    assert abs(report["loss"] - report["expected_loss"]) < 1e-5 and report["same_keys"]
    assert report["max_grad_diff"] < 5e-6, report


def test_the_collator_gives_the_videos_each_text_and_its_drawn_foil_fit(processor):
    from s2ca_hf.data import max_positives

    rows = foil_rows().add_column("positive_video_indices", [[0, 2], [0], [1], [2]])
    true_of = [[[1], [], [2, 1]], [[1], [], []], [], [[], [0], []]]  # per foil: the videos it is true of
    rows = rows.add_column("foil_positive_video_indices", true_of)
    assert max_positives(rows) == 2
    batch = collate(processor, list(rows), epoch=1, positives_width=2)
    assert batch["positive_video_index"].tolist() == [[0, 2], [0, -1], [1, -1], [2, -1]]
    found = drawn_foils(processor, batch, list(rows))
    for n, (row, foil) in enumerate(zip(rows, found)):
        expected = [] if foil is None else row["foil_positive_video_indices"][row["foils"].index(foil)]
        assert batch["foil_positive_video_index"][n].tolist() == expected + [-1] * (2 - len(expected))
    with pytest.raises(ValueError, match="positives_width=1"):
        collate(processor, list(rows), positives_width=1)
    assert "positive_video_index" not in collate(processor, list(rows))  # only when asked for

"""What a trained model gets wrong and how it uses its concepts, on every split of the built-in corpus: R@1 per query
type, what each wrong top-1 video fails of the caption, and for S2CA models the allocation statistics (tokens per
concept, empty concepts, concepts shared by a true pair) and R@1 from s_inst alone, s_con alone and both. Used by
`accuracy.py` and `s2ca_diagnosis.py`; the tables it renders are explained by the legends below.
"""

import json
import os
import statistics
from collections import Counter

import numpy as np
import torch
from runs import SPLITS, cell, r1_cell

from s2ca_hf.data.synthetic import ERROR_KINDS, QUERY_TYPES
from s2ca_hf.data.synthetic_scenes import ALL_COLOURS, BACKGROUND_PHRASES, MOTION_PHRASES, PRETRAIN_SHAPES, SHAPES
from s2ca_hf.visualization import token_concepts


@torch.inference_mode()
def encode_split(model, processor, data_dir: str, split: str) -> dict:
    """Every clip of an evaluation split and its one caption (text i describes video i), through the model's two
    towers: instance features, concept outputs, and the Gumbel agreement statistics of the allocation."""
    from torch.utils.data import DataLoader

    from s2ca_hf.data import VideoTextCollator, load_corpus

    dataset = load_corpus("synthetic", data_dir, split)
    parts = {"text": [], "video": []}
    generator = torch.Generator().manual_seed(0)
    for batch in DataLoader(dataset, batch_size=32, collate_fn=VideoTextCollator(processor)):
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        video = model.encode_video(batch["pixel_values_videos"], batch["frame_mask"])
        for side, out in (("text", text), ("video", video)):
            part = {"instance": out.instance_embeds}
            if out.concepts is not None:
                concepts = out.concepts
                logits, valid = concepts.allocation_logits, concepts.token_mask.bool()
                noise = -torch.empty(logits.shape).exponential_(generator=generator).log()
                noisy = logits + noise  # the training-time allocation of `allocation="gumbel"`
                part.update(
                    token_concepts=list(token_concepts(concepts)),  # each token's concept, for the purity measures
                    features=concepts.concept_features,
                    weights=concepts.concept_weights,
                    empty=concepts.empty_concepts,
                    counts=concepts.token_counts,
                    agree=(noisy.argmax(1) == logits.argmax(1))[valid].float(),
                    spread=logits.std(1)[valid],
                )
                if concepts.token_weights is not None:  # the late-interaction re-ranker's view of the text
                    part.update(
                        token_features=list(concepts.token_features), token_weights=list(concepts.token_weights)
                    )
            parts[side].append(part)
        parts["text"][-1]["input_ids"] = list(batch["input_ids"])
    encoded = {side: {k: _concatenate([p[k] for p in parts[side]]) for k in parts[side][0]} for side in parts}
    encoded["video_ids"] = list(dataset["video_id"])
    column = {video_id: k for k, video_id in enumerate(encoded["video_ids"])}
    encoded["positives"] = [sorted(column[v] for v in ids) for ids in dataset["positive_video_ids"]]
    encoded["query_types"] = list(dataset["query_type"])
    return encoded


def _concatenate(parts: list):
    """One tensor from batch tensors, or one list from batch lists (rows of different lengths)."""
    return [row for part in parts for row in part] if isinstance(parts[0], list) else torch.cat(parts)


def scores(model, encoded: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """s_inst and s_con `(T, V)` of an encoded split (s_con None without concepts)."""
    from s2ca_hf.modeling_s2ca import concept_similarity

    text, video = encoded["text"], encoded["video"]
    instance = text["instance"] @ video["instance"].t()
    if "features" not in text:
        return instance, None
    return instance, concept_similarity(text["features"], text["weights"], video["features"], video["weights"])


def t2v_r1(scores_: torch.Tensor, positives: list[list[int]], rows: list[int] | None = None) -> float | None:
    """Text->video R@1 with every correct answer counted (the corpus's content-aware ground truth), over `rows`
    (default: every query); None for no row."""
    from s2ca_hf.retrieval.metrics import retrieval_metrics

    rows = list(range(len(positives))) if rows is None else rows
    if not rows:
        return None
    subset = scores_[rows]
    own = torch.tensor(rows)  # text i's own clip is video i
    metrics = retrieval_metrics(subset, own, positives=[positives[r] for r in rows])
    return metrics["text_to_video"]["R@1"]


def r1_by_query_type(scores_: torch.Tensor, encoded: dict) -> dict[str, float | None]:
    """Text->video R@1 per query type: captions that name everything, one (or some) of several objects, a binding
    pair, a motion pair (see `s2ca_hf.data.synthetic`)."""
    types = encoded["query_types"]
    return {
        kind: t2v_r1(scores_, encoded["positives"], [i for i, t in enumerate(types) if t == kind])
        for kind in QUERY_TYPES
    }


def attribute_errors(scores_: torch.Tensor, encoded: dict, clips: dict) -> dict:
    """For each text query whose top-1 video is not a correct answer, what that video fails of what the caption says
    (`s2ca_hf.data.synthetic.query_error`), per 100 queries; "none" counts top-1 videos that show everything the
    caption says yet are not among its listed answers (0 unless the ground truth is wrong). Also the share of the
    wrong top-1 hits inside the query's minimal-pair group."""
    from s2ca_hf.data.synthetic import query_error

    video_ids = encoded["video_ids"]
    top = scores_.argmax(dim=1).tolist()
    wrong = [(i, j) for i, j in enumerate(top) if j not in encoded["positives"][i]]
    kinds = [query_error(clips[video_ids[i]].query, clips[video_ids[j]]) for i, j in wrong]
    in_group = sum(clips[video_ids[i]].group == clips[video_ids[j]].group for i, j in wrong)
    result = {kind: 100.0 * kinds.count(kind) / len(top) for kind in ERROR_KINDS}
    result.update(errors=100.0 * len(wrong) / len(top), in_group=in_group / len(wrong) if wrong else None)
    return result


LAMBDAS = (0.25, 0.5, 1.0, 2.0, 4.0)


def concept_statistics(model, encoded: dict) -> dict:
    """How a trained model uses its concepts on one split (one caption per video, text i describes video i).

    * tokens per concept and the empty-concept rate, per modality; the mean |cosine| between distinct prototypes
      (collapse shows as 1);
    * `shared_concepts_matched` / `_unmatched`: how many concepts are non-empty on both the text and the video side,
      for the true pairs and for all other pairs: s_con only sees concepts both sides use;
    * `concept_cosine_matched` / `_unmatched`: the mean cosine of a concept's text and video features over those
      shared concepts (does a shared concept carry content, or only its prototype?);
    * `{side}_top_concept_share`: the share of an item's tokens in its fullest concept (1: everything in one);
    * `{side}_logit_spread`: the std over concepts of the allocation logits Z, and `{side}_train_eval_agreement`: how
      often training's noisy allocation argmax(Z + g) picks evaluation's argmax(Z) (chance: 1/K; Gumbel only). Small
      logits next to the noise mean the concepts are trained on near-random groupings of tokens.
    """
    prototypes = torch.nn.functional.normalize(model.concepts.prototypes.detach(), dim=-1)
    cosines = prototypes @ prototypes.t()
    off_diagonal = ~torch.eye(len(cosines), dtype=torch.bool)
    stats = {"prototype_abs_cosine": float(cosines[off_diagonal].abs().mean())}
    for side in ("text", "video"):
        part = encoded[side]
        counts = part["counts"]
        stats[f"{side}_tokens_per_concept"] = [round(float(v), 3) for v in counts.mean(0)]
        stats[f"{side}_empty_concept_rate"] = float(part["empty"].mean())
        stats[f"{side}_top_concept_share"] = float((counts.max(1).values / counts.sum(1).clamp(min=1e-6)).mean())
        stats[f"{side}_logit_spread"] = float(part["spread"].mean())
        noisy = model.config.allocation == "gumbel"
        stats[f"{side}_train_eval_agreement"] = float(part["agree"].mean()) if noisy else None
    text, video = encoded["text"], encoded["video"]
    shared = (1 - text["empty"]) @ (1 - video["empty"]).t()  # (T, V): concepts non-empty on both sides
    per_concept_cosine = torch.einsum("tkd,vkd->tvk", text["features"], video["features"])  # 0 where one is empty
    matched = torch.eye(len(shared), dtype=torch.bool)
    for name, pairs in (("matched", matched), ("unmatched", ~matched)):
        stats[f"shared_concepts_{name}"] = float(shared[pairs].mean())
        cosine_sum = per_concept_cosine.sum(-1)[pairs].sum()
        stats[f"concept_cosine_{name}"] = float(cosine_sum / shared[pairs].sum().clamp(min=1))
    return stats


# The attribute a caption word names, from the corpus's own vocabulary tables; function words name none.
FUNCTION_WORDS = {"a", "an", "the", "to", "of", "on", "in", "and", "at", "from", "over", "against", "front", "off"}
WORD_ATTRIBUTES = {
    **{word: "background" for phrases in BACKGROUND_PHRASES.values() for p in phrases for word in p.split()},
    **{word: "motion" for phrases in MOTION_PHRASES.values() for p in phrases for word in p.split()},
    **{word: "colour" for word in ALL_COLOURS},
    **{word: "shape" for word in SHAPES + PRETRAIN_SHAPES},
}
WORD_ATTRIBUTES = {word: kind for word, kind in WORD_ATTRIBUTES.items() if word not in FUNCTION_WORDS}


def _purity(groups: list[tuple[list, list]], rng: np.random.Generator, per_group: bool) -> tuple[float | None, float]:
    """The share of (owner, label) pairs whose label is their owner's most frequent one, owners pooled over the
    groups (`per_group=False`) or told apart per group; and the same after shuffling the labels within each group
    (what an allocation blind to the labels gets)."""

    def majority_share(shuffle: bool) -> float | None:
        counts: dict = {}
        for group, (owners, labels) in enumerate(groups):
            labels = rng.permutation(labels).tolist() if shuffle else labels
            for owner, label in zip(owners, labels):
                counts.setdefault((group, owner) if per_group else owner, Counter())[label] += 1
        total = sum(sum(c.values()) for c in counts.values())
        return sum(max(c.values()) for c in counts.values()) / total if total else None

    return majority_share(False), majority_share(True)


def patch_majority(labels: np.ndarray, side: int) -> np.ndarray:
    """`(F, side * side)`: the label most pixels of each patch show (row-major, as CLIP orders its patches), from
    pixel labels `(F, S, S)` >= -1; the frame is scaled to the patch grid as the processor scales it to the model."""
    num_frames, size = labels.shape[0], labels.shape[1]
    block = np.arange(size) * side // size  # each pixel's patch row (and column)
    votes = np.zeros((num_frames, side, side, int(labels.max()) + 2), dtype=np.int64)
    np.add.at(votes, (np.arange(num_frames)[:, None, None], block[:, None], block[None, :], labels + 1), 1)
    return votes.argmax(-1).reshape(num_frames, -1) - 1


def purity_statistics(model, processor, encoded: dict, clips: dict, data_dir: str) -> dict:
    """How consistently each concept takes one attribute in text and one object in video (val split).

    * `text_attribute_purity`: the caption words that name an attribute (colour, shape, motion or background, from
      the corpus's vocabulary; BPE pieces take their word's), grouped by the concept evaluation allocates them to
      over the whole split: the share of each concept's words that name its most frequent attribute;
    * `video_object_purity`: the patches that show an object (where the corpus drew it in the frames the model saw),
      per clip and concept: the share of the concept's object patches on its most frequent object;
    * `video_object_concentration`: per clip and object, the share of its patches in the concept holding most of
      them (1: each object is one concept's);
    each with `_chance`, the same after shuffling the concepts among the words of a caption or the patches of a clip.
    The video measures are None when no patch shows an object (objects smaller than half a patch).
    """
    from s2ca_hf.data.synthetic_render import object_labels
    from s2ca_hf.frame_policy import FramePolicy

    rng = np.random.default_rng(0)
    words = []
    for ids, concepts in zip(encoded["text"]["input_ids"], encoded["text"]["token_concepts"]):
        tokens = processor.tokenizer.convert_ids_to_tokens(ids.tolist())
        word, pieces, owners, labels = "", [], [], []
        for token, concept in zip(tokens, concepts.tolist()):
            if concept < 0:  # [SOT], padding: not allocated
                word, pieces = "", []
                continue
            word, pieces = word + token.replace("</w>", ""), pieces + [concept]
            if token.endswith("</w>"):  # a word ends: its pieces take its attribute
                attribute = WORD_ATTRIBUTES.get(word.lower())
                owners += pieces if attribute else []
                labels += [attribute] * len(pieces) if attribute else []
                word, pieces = "", []
        words.append((owners, labels))
    stats = {}
    stats["text_attribute_purity"], stats["text_attribute_purity_chance"] = _purity(words, rng, per_group=False)
    vision = model.config.vision_config
    side = vision.image_size // vision.patch_size
    with open(os.path.join(data_dir, "synthetic.json"), encoding="utf-8") as f:
        arguments = json.load(f)["arguments"]
    size, num_frames, fps = arguments["size"], arguments["num_frames"], arguments["fps"]
    frames = FramePolicy.from_processor(processor).frame_indices(num_frames, fps)
    patches, objects = [], []
    for video_id, concepts in zip(encoded["video_ids"], encoded["video"]["token_concepts"]):
        patch_labels = patch_majority(object_labels(clips[video_id], size, num_frames, frames), side)
        token_concepts = concepts.view(-1, 1 + side * side)[: len(frames), 1:].numpy()  # the patches, not [CLS]
        on_object = (patch_labels >= 0) & (token_concepts >= 0)
        owner, label = token_concepts[on_object].tolist(), patch_labels[on_object].tolist()
        patches.append((owner, label))
        objects.append((label, owner))  # the same pairs, seen from the objects
    stats["video_object_purity"], stats["video_object_purity_chance"] = _purity(patches, rng, per_group=True)
    concentration = _purity(objects, rng, per_group=True)
    stats["video_object_concentration"], stats["video_object_concentration_chance"] = concentration
    return stats


def late_interaction(encoded: dict) -> torch.Tensor:
    """The re-ranker's score `(T, V)` of every text against every video of an encoded split."""
    from s2ca_hf.modeling_s2ca import late_interaction_score

    video = encoded["video"]["features"]
    rows = [
        late_interaction_score(features[None], weights[None], video)[0]
        for features, weights in zip(encoded["text"]["token_features"], encoded["text"]["token_weights"])
    ]
    return torch.stack(rows)


def reranked(first: torch.Tensor, encoded: dict, candidates: int = 20) -> torch.Tensor:
    """The two-stage score, as `evaluate_corpus` reports it: each text's top `candidates` re-scored by first stage +
    late interaction, kept above the rest."""
    from s2ca_hf.retrieval.evaluation import pad_tokens, reranked_scores

    features, weights = pad_tokens(encoded["text"]["token_features"], encoded["text"]["token_weights"])
    return reranked_scores(first, encoded["video"]["features"], features, weights, candidates)


@torch.inference_mode()
def diagnostics(model, processor, data_dir: str) -> dict:
    """Per split: the attribute error breakdown of the model's score and, with concepts, text->video R@1 from
    s_inst alone, s_con alone and the model's score (`t2v_R@1_instance_only` / `_concept_only` / `_combined`); on
    `val` also the concept statistics and R@1 for other concept score weights lambda_e (chosen there, never on test).
    """
    from s2ca_hf.data.synthetic import load_clips

    clips = load_clips(data_dir)
    model.eval()
    result = {}
    for split in SPLITS:
        encoded = encode_split(model, processor, data_dir, split)
        instance, concept = scores(model, encoded)
        combined = instance if concept is None else instance + model.config.concept_score_weight * concept
        positives = encoded["positives"]
        entry = {
            "errors": attribute_errors(combined, encoded, clips),
            "query_types": r1_by_query_type(combined, encoded),
        }
        if concept is not None:
            entry["t2v_R@1_instance_only"] = t2v_r1(instance, positives)
            entry["t2v_R@1_concept_only"] = t2v_r1(concept, positives)
            entry["t2v_R@1_combined"] = t2v_r1(combined, positives)
            if "token_features" in encoded["text"]:
                entry["t2v_R@1_reranked"] = t2v_r1(reranked(combined, encoded), positives)
                entry["t2v_R@1_late_only"] = t2v_r1(late_interaction(encoded), positives)
            if split == "val":
                entry["lambda_e"] = {str(w): t2v_r1(instance + w * concept, positives) for w in LAMBDAS}
                entry.update(concept_statistics(model, encoded))
                entry.update(purity_statistics(model, processor, encoded, clips, data_dir))
        result[split] = entry
    return result


def run_diagnostics(model_dir: str, data_dir: str) -> dict:
    from s2ca_hf import S2CAModel, S2CAProcessor

    return diagnostics(S2CAModel.from_pretrained(model_dir), S2CAProcessor.from_pretrained(model_dir), data_dir)


DIAGNOSTICS = (  # the allocation statistics that the tables show, as (text, video) or (true pair, other pairs)
    ("empty t / v", "text_empty_concept_rate", "video_empty_concept_rate"),
    ("top t / v", "text_top_concept_share", "video_top_concept_share"),
    ("Z std t / v", "text_logit_spread", "video_logit_spread"),
    ("train = eval t / v", "text_train_eval_agreement", "video_train_eval_agreement"),
    ("shared pair / other", "shared_concepts_matched", "shared_concepts_unmatched"),
    ("cos pair / other", "concept_cosine_matched", "concept_cosine_unmatched"),
    ("purity words / chance", "text_attribute_purity", "text_attribute_purity_chance"),
    ("purity objects / chance", "video_object_purity", "video_object_purity_chance"),
    ("object whole / chance", "video_object_concentration", "video_object_concentration_chance"),
)
R1_DIAGNOSTICS = ("t2v_R@1_instance_only", "t2v_R@1_concept_only", "t2v_R@1_combined", "t2v_R@1_reranked")
DIAGNOSTICS_LEGEND = (
    "t / v = text / video, means over seeds, val split. empty = share of the K concepts that get no token; top = "
    "share of an item's tokens in its fullest concept; Z std = spread of the allocation logits over the concepts; "
    "train = eval = how often training's noisy allocation argmax(Z + g) picks evaluation's argmax(Z) (chance 1/K; "
    "– for soft allocation, which has no noise); shared = concepts non-empty on both sides (true pair / any other "
    "pair); cos = mean concept cosine over shared concepts (true pair / other pairs); purity words = share of a "
    "concept's attribute words (colour, shape, motion, background) that name its most frequent attribute, over the "
    "split; purity objects = share of a concept's object patches (per clip, where the corpus drew the objects) on its "
    "most frequent object; object whole = share of an object's patches in the concept holding most of them; each with "
    "its chance level (the concepts shuffled within a caption or clip); R@1 inst / con / both / re-ranked = "
    "text->video R@1 from s_inst alone, s_con alone, s_inst + lambda_e s_con (the model's score), and that score's "
    "top 20 re-ranked by the late-interaction re-ranker (– without one), on every split; best lambda_e = the "
    "concept score weight with the best val R@1 (of " + ", ".join(str(w) for w in LAMBDAS) + "), with that R@1."
)
ERRORS_LEGEND = (
    "Per 100 text queries (means over seeds): all = queries whose top-1 video is not a correct answer (a correct "
    "answer shows everything the caption says); then what that video fails of the caption: none = it shows everything "
    "yet is not listed as an answer (0 unless the ground truth is wrong), one named object's colour, shape or motion, "
    "direction = a named motion reversed in time, binding = every named colour, shape and motion is there on other "
    "objects, background, several = more than one thing; in group = share of the wrong top-1 hits that are in the "
    "query's own minimal-pair group."
)
QUERY_TYPES_LEGEND = (
    "Text->video R@1 per query type (means over seeds): all = the caption names every object; subset = it names one "
    "or some of several; binding = the clip has a twin with two objects' colours, shapes or motions swapped; motion = "
    "the clip has a twin with one object's motion reversed in time (or changed). Ceilings: the table above."
)


def diagnostic_header() -> str:
    names = " | ".join(name for name, _, _ in DIAGNOSTICS)
    return names + " | R@1 inst / con / both / re-ranked: " + " | ".join(SPLITS) + " | best lambda_e (val R@1)"


def diagnostic_cells(runs: list[dict]) -> str:
    """The table cells of one row: mean concept statistics on val and R@1 triples per split over the seeds."""
    stats = mean_statistics([run["val"] for run in runs])
    cells = [f"{cell(stats.get(a))} / {cell(stats.get(b))}" for _, a, b in DIAGNOSTICS]
    for split in SPLITS:
        split_stats = mean_statistics([run[split] for run in runs])
        cells.append(" / ".join(r1_cell(split_stats.get(k)) for k in R1_DIAGNOSTICS))
    sweep = [run["val"].get("lambda_e") for run in runs]
    if all(sweep):
        means = {w: statistics.fmean(s[w] for s in sweep) for w in sweep[0]}
        best = max(means, key=means.get)
        cells.append(f"{best} ({means[best]:.1f})")
    else:
        cells.append("–")
    return " | ".join(cells)


def mean_statistics(runs: list[dict]) -> dict:
    """Means over seeds of each scalar statistic (None where any run lacks it)."""
    keys = [k for k, v in runs[0].items() if not isinstance(v, (list, dict))]
    return {
        k: None if any(run.get(k) is None for run in runs) else statistics.fmean(run[k] for run in runs) for k in keys
    }


def error_lines(by_method: dict[str, list[dict]]) -> list[str]:
    """The attribute error table: one row per method and reported split."""
    lines = [
        "| method | split | all | " + " | ".join(ERROR_KINDS) + " | in group |",
        "|---|---|---|" + "---|" * (len(ERROR_KINDS) + 1),
    ]
    for method, runs in by_method.items():
        for split in SPLITS[1:]:
            errors = mean_statistics([run[split]["errors"] for run in runs])
            kinds = " | ".join(f"{errors[k]:.1f}" for k in ERROR_KINDS)
            lines.append(f"| {method} | {split} | {errors['errors']:.1f} | {kinds} | {cell(errors['in_group'])} |")
    return lines


def query_type_lines(by_method: dict[str, list[dict]]) -> list[str]:
    """Text->video R@1 per query type and split, one row per method and split."""
    lines = ["| method | split | " + " | ".join(QUERY_TYPES) + " |", "|---|---|" + "---|" * len(QUERY_TYPES)]
    for method, runs in by_method.items():
        for split in SPLITS:
            per_type = mean_statistics([run[split]["query_types"] for run in runs])
            lines.append(f"| {method} | {split} | " + " | ".join(r1_cell(per_type[t]) for t in QUERY_TYPES) + " |")
    return lines


def concept_lines(by_method: dict[str, list[dict]]) -> list[str]:
    lines = ["| method | " + diagnostic_header() + " |", "|---|" + "---|" * (len(DIAGNOSTICS) + len(SPLITS) + 1)]
    for method, runs in by_method.items():
        if "t2v_R@1_combined" in runs[0]["val"]:
            lines.append(f"| {method} | {diagnostic_cells(runs)} |")
    return lines

"""Where the video concepts' picks land, for one trained model on the val split of a built-in corpus (first 128
clips): each concept's share of picks on the frame token (each frame's refined [CLS], token 0 of the frame), and
the picks per patch position (relative to their mean).

python benchmarks/results/diagnosis/concept_pilots/picks.py MODEL_DIR DATA_DIR
"""

import sys, torch
from s2ca_hf import S2CAModel, S2CAProcessor
from s2ca_hf.data import VideoTextCollator, load_corpus
from torch.utils.data import DataLoader
model_dir, data_dir = sys.argv[1], sys.argv[2]
model, processor = S2CAModel.from_pretrained(model_dir).eval(), S2CAProcessor.from_pretrained(model_dir)
ds = load_corpus("synthetic", data_dir, "val")
cls_share, n = [], 0
per_concept_cls = torch.zeros(model.config.num_concepts); per_concept_tot = torch.zeros(model.config.num_concepts)
pos_hist = None
with torch.no_grad():
    for i, batch in enumerate(DataLoader(ds, batch_size=32, collate_fn=VideoTextCollator(processor))):
        v = model.encode_video(batch["pixel_values_videos"], batch["frame_mask"])
        A = v.concepts.allocation  # B,K,N
        F = batch["frame_mask"].shape[1]
        A = A.view(A.shape[0], A.shape[1], F, -1)
        per_concept_cls += A[..., 0].sum((0, 2)); per_concept_tot += A.sum((0, 2, 3))
        h = A.sum((0, 1, 2))
        pos_hist = h if pos_hist is None else pos_hist + h
        if i >= 3: break
print("share of picks on the frame token per concept:", (per_concept_cls / per_concept_tot).numpy().round(2))
print("overall:", float(per_concept_cls.sum() / per_concept_tot.sum()))
T = pos_hist.shape[0]; side = int((T - 1) ** 0.5)
print("picks per patch position (normalised to mean 1):")
print((pos_hist[1:] / pos_hist[1:].mean()).view(side, side).numpy().round(1))

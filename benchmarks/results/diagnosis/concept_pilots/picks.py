"""Where the video concepts' picks land, for one trained model on the val split of a built-in corpus (first 128
clips): each concept's share of picks on the frame token (each frame's refined [CLS], token 0 of the frame), and
the picks per patch position (relative to their mean).

python benchmarks/results/diagnosis/concept_pilots/picks.py MODEL_DIR DATA_DIR
"""

import sys

import torch
from torch.utils.data import DataLoader

from s2ca_hf import S2CAModel, S2CAProcessor
from s2ca_hf.data import VideoTextCollator, load_corpus


model_dir, data_dir = sys.argv[1], sys.argv[2]
model, processor = S2CAModel.from_pretrained(model_dir).eval(), S2CAProcessor.from_pretrained(model_dir)
dataset = load_corpus("synthetic", data_dir, "val")
on_frame_token = torch.zeros(model.config.num_concepts)
picks = torch.zeros(model.config.num_concepts)
by_position = 0
with torch.no_grad():
    for i, batch in enumerate(DataLoader(dataset, batch_size=32, collate_fn=VideoTextCollator(processor))):
        if i == 4:
            break
        video = model.encode_video(batch["pixel_values_videos"], batch["frame_mask"])
        allocation = video.concepts.allocation  # (B, K, F (1 + P))
        allocation = allocation.view(*allocation.shape[:2], batch["frame_mask"].shape[1], -1)
        on_frame_token += allocation[..., 0].sum((0, 2))
        picks += allocation.sum((0, 2, 3))
        by_position = by_position + allocation.sum((0, 1, 2))
print("share of picks on the frame token per concept:", (on_frame_token / picks).numpy().round(2))
print("overall:", float(on_frame_token.sum() / picks.sum()))
side = int((by_position.shape[0] - 1) ** 0.5)
print("picks per patch position (normalised to mean 1):")
print((by_position[1:] / by_position[1:].mean()).view(side, side).numpy().round(1))

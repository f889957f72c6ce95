"""The concept diagnostics of one trained model on the val split of a built-in corpus, as one JSON line:

python benchmarks/results/diagnosis/concept_pilots/val_diagnostics.py MODEL_DIR DATA_DIR
"""

import json
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))  # benchmarks/
import model_diagnostics as m  # noqa: E402

from s2ca_hf import S2CAModel, S2CAProcessor  # noqa: E402
from s2ca_hf.data.synthetic import load_clips  # noqa: E402


model_dir, data_dir = sys.argv[1], sys.argv[2]
model, processor = S2CAModel.from_pretrained(model_dir).eval(), S2CAProcessor.from_pretrained(model_dir)
encoded = m.encode_split(model, processor, data_dir, "val")
instance, concept = m.scores(model, encoded)
combined = instance + model.config.concept_score_weight * concept
stats = {
    "R1_inst": m.t2v_r1(instance, encoded["positives"]),
    "R1_con": m.t2v_r1(concept, encoded["positives"]),
    "R1_both": m.t2v_r1(combined, encoded["positives"]),
}
if "token_features" in encoded["text"]:
    stats["R1_reranked"] = m.t2v_r1(m.reranked(combined, encoded), encoded["positives"])
    stats["R1_late_only"] = m.t2v_r1(m.late_interaction(encoded), encoded["positives"])
stats.update(m.concept_statistics(model, encoded))
stats.update(m.purity_statistics(model, processor, encoded, load_clips(data_dir), data_dir))
print(
    json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items() if not isinstance(v, list)})
)

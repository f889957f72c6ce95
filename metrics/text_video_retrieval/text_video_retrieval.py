"""Text-video retrieval metrics (R@K, MdR, MnR in both directions) as an `evaluate` module.

A thin wrapper around `retrieval_metrics.py` next to it, which in the repository is a symbolic link to
`s2ca_hf/retrieval/metrics.py` (numpy and torch only): `evaluate.load` copies a relative import found in the script
from the script's folder (following the link), so the module needs no `s2ca_hf` and there is one implementation,
which `s2ca_hf.retrieval.retrieval_metrics` and `evaluate.load` both run. Load it offline with
`evaluate.load("metrics/text_video_retrieval")` from the repository root; publish the folder with
`huggingface_hub.upload_folder`, which uploads the linked file's content.
"""

import datasets
import evaluate
import numpy as np

from .retrieval_metrics import retrieval_metrics


_DESCRIPTION = """
Text-to-video and video-to-text retrieval metrics as CLIP4Clip reports them: R@1, R@5, R@10, R@50 in percent,
median (MdR) and mean (MnR) rank, 1-based, and the rank standard deviation. One prediction is one text's row of
similarities against every video; its reference is the column of that text's video. Several texts may share a
video (MSVD-style multi-caption evaluation). Optionally a text may have several correct videos (`positives`), when
its caption fits other clips than its own: a query is then ranked by its best correct video, and correct videos do
not compete with each other.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row per text, the similarity of that text with every video.
    references (`list` of `int`): the column of each text's video.
    ties (`str`, optional): "average" (default: a tied ground truth gets the mean of the tied positions) or
        "clip4clip" (CLIP4Clip's metric functions exactly, tie behaviour included).
    video_to_text (`str`, optional): "clip4clip" (default: caption groups scored by their best caption) or "ce".
    post_processing (`str`, optional): None, "dsl" or "qb_norm" (then `query_bank` is needed): always report
        post-processed numbers apart from plain ones.
    ks (`list` of `int`, optional): the K of R@K, default [1, 5, 10, 50].
    positives (`list` of `list` of `int`, optional): per prediction row, in order, the columns of every video that
        is a correct answer to that text, its own (`references`) included; or a boolean [num_texts, num_videos]
        mask. A query's rank is then the number of wrong videos (or texts) scoring above its best correct one,
        ties with wrong ones averaged. A keyword of `compute` (not an input of `add`/`add_batch`): give it for all
        rows at once. Default: the reference is the only correct video.
Returns:
    `{"text_to_video": {...}, "video_to_text": {...}, "protocol": {...}}`.
Examples:
    >>> metric = evaluate.load("metrics/text_video_retrieval")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["text_to_video"]["R@1"]
    100.0
    >>> # Text 1 also describes video 0, which it scores highest: a hit once video 0 is one of its positives.
    >>> metric.compute(
    ...     predictions=[[0.9, 0.1], [0.8, 0.2]], references=[0, 1], positives=[[0], [0, 1]]
    ... )["text_to_video"]["R@1"]
    100.0
"""

_CITATION = """
@article{luo2022clip4clip,
  title={CLIP4Clip: An empirical study of CLIP for end to end video clip retrieval and captioning},
  author={Luo, Huaishao and Ji, Lei and Zhong, Ming and Chen, Yang and Lei, Wen and Duan, Nan and Li, Tianrui},
  journal={Neurocomputing},
  volume={508},
  pages={293--304},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TextVideoRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # `positives` is a keyword of `compute`, not a feature: `evaluate` requires every feature in every call,
            # so a third feature would break `compute(predictions=..., references=...)`.
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://github.com/ArrowLuo/CLIP4Clip"],
        )

    def _compute(
        self,
        predictions,
        references,
        ties="average",
        video_to_text="clip4clip",
        post_processing=None,
        query_bank=None,
        ks=(1, 5, 10, 50),
        positives=None,
    ):
        sim = np.asarray(predictions, dtype=np.float64)
        return retrieval_metrics(
            sim,
            np.asarray(references, dtype=np.int64),
            ties=ties,
            video_to_text=video_to_text,
            post_processing=post_processing,
            query_bank=query_bank,
            ks=tuple(ks),
            positives=positives,
        )

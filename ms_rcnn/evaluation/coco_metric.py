"""COCO metric that evaluates boxes and masks by their own scores."""
from typing import Sequence

from mmdet.evaluation import CocoMetric

from ..registry import METRICS


@METRICS.register_module()
class MaskScoringCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` with Mask Scoring R-CNN's protocol.

    Boxes are ranked by the classification score (``pred_instances.bbox_scores``) and masks by
    the mask score (``pred_instances.scores``), as in the paper. Predictions without
    ``bbox_scores`` (e.g. a plain Mask R-CNN) are evaluated exactly as ``CocoMetric`` does.
    Takes the arguments of :class:`mmdet.evaluation.CocoMetric`.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store each image's results, with box and mask scores kept apart."""
        super().process(data_batch, data_samples)
        stored = self.results[len(self.results) - len(data_samples):]
        for (_, result), sample in zip(stored, data_samples):
            pred = sample['pred_instances']
            if 'bbox_scores' in pred:
                result['mask_scores'] = result['scores']
                result['scores'] = pred['bbox_scores'].detach().cpu().numpy()

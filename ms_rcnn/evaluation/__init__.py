"""Evaluation metrics of ms_rcnn."""
from .coco_metric import MaskScoringCocoMetric, check_evaluable

__all__ = ['MaskScoringCocoMetric', 'check_evaluable']

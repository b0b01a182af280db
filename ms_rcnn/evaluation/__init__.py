"""Evaluation metrics of ms_rcnn."""
from .coco_metric import MaskScoringCocoMetric

__all__ = ['MaskScoringCocoMetric']

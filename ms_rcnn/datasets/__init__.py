"""Datasets: the COCO dataset with ms_rcnn's bad-data checks and policy."""
from .bad_data_policy import POLICY, BadDatasetError, CleanReport, clean_coco
from .checked_coco import BadImageError, CheckedCocoDataset, CheckedImageLoading
from .coco_checks import SEVERITY, DatasetInputError, Problem, check_coco

__all__ = [
    'POLICY', 'SEVERITY', 'BadDatasetError', 'BadImageError', 'CheckedCocoDataset',
    'CheckedImageLoading', 'CleanReport', 'DatasetInputError', 'Problem', 'check_coco',
    'clean_coco'
]

"""The Mask Scoring R-CNN detector."""
from mmdet.models.detectors import TwoStageDetector

from ..registry import MODELS


@MODELS.register_module()
class MaskScoringRCNN(TwoStageDetector):
    """`Mask Scoring R-CNN <https://arxiv.org/abs/1903.00241>`_.

    A two-stage detector whose RoI head is ``ms_rcnn.MaskScoringRoIHead``. Its state dict has
    the keys and shapes of mmdet's ``MaskScoringRCNN``, so mmdet's checkpoints load unchanged.
    """

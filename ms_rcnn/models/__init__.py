from .mask_iou_head import MaskIoUHead
from .mask_scoring_rcnn import MaskScoringRCNN
from .mask_scoring_roi_head import MaskScoringRoIHead

__all__ = ['MaskIoUHead', 'MaskScoringRoIHead', 'MaskScoringRCNN']

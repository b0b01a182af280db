# MS R-CNN on Balloon, from scratch: the Mask R-CNN twin plus the scoring head.
_base_ = './mask-rcnn_r18_fpn_balloon.py'

model = dict(
    type='ms_rcnn.MaskScoringRCNN',
    roi_head=dict(
        type='ms_rcnn.MaskScoringRoIHead',
        mask_iou_head=dict(type='ms_rcnn.MaskIoUHead', in_channels={{_base_.channels}},
                           conv_out_channels={{_base_.channels}}, fc_out_channels=512,
                           num_classes=1)),
    train_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))
val_evaluator = dict(type='ms_rcnn.MaskScoringCocoMetric')
test_evaluator = val_evaluator

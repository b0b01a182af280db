# Mask Scoring R-CNN, ResNet-50-FPN, 12 epochs on COCO: Mask R-CNN plus the MaskIoU head.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['ms_rcnn'], allow_failed_imports=False)

model = dict(
    type='ms_rcnn.MaskScoringRCNN',
    roi_head=dict(
        type='ms_rcnn.MaskScoringRoIHead',
        mask_iou_head=dict(
            type='ms_rcnn.MaskIoUHead',
            num_convs=4,
            num_fcs=2,
            roi_feat_size=14,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            num_classes=80)),
    # Predicted masks are binarised at this probability to compute the MaskIoU targets.
    train_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))

# Boxes ranked by classification score, masks by mask score (the paper's protocol).
val_evaluator = dict(type='ms_rcnn.MaskScoringCocoMetric')
test_evaluator = val_evaluator

# Annotations and images are checked as they load, and a NaN/inf loss stops the run before it
# can be checkpointed (docs/bad_data.md). mmdet's NumClassCheckHook stops a run whose heads'
# num_classes differ from the dataset's classes before the first epoch, not at evaluation.
train_dataloader = dict(dataset=dict(type='ms_rcnn.CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='ms_rcnn.CheckedCocoDataset'))
test_dataloader = val_dataloader
custom_hooks = [dict(type='ms_rcnn.CheckFiniteLossHook'), dict(type='NumClassCheckHook')]

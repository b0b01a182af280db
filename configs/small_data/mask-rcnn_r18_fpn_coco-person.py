# Mask R-CNN twin of ms-rcnn_r18_fpn_coco-person.py: same data, schedule, seed and model except
# the scoring head. A ResNet-18-FPN with GroupNorm trained from scratch (no pretrained weights
# exist on the project's machines) on the COCO person subset of ../shared/data/README.md.
# Point it at another copy with --data-root /path/to/coco_person/ (or --cfg-options data_root=...).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

data_root = '../shared/data/coco_person/'
# No palette: a child config with more classes would inherit one too short to draw them.
metainfo = dict(classes=('person', ))
image_scale = (512, 384)
max_epochs = 8
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)

# 128-channel FPN and heads: about 4x cheaper than mmdet's 256 channels, which matters on CPU.
channels = 128
model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=channels, norm_cfg=norm_cfg),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, fc_out_channels=512, num_classes=1),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels, norm_cfg=norm_cfg,
                       num_classes=1)),
    train_cfg=dict(rcnn=dict(sampler=dict(num=256))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.8, 1.2), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    # Workers restart each epoch, so --resume reproduces the uninterrupted run (RNGStateHook);
    # their seeds come from torch's per-epoch seed, not a fixed one that every epoch would repeat.
    persistent_workers=False,
    worker_init_fn=dict(type='ms_rcnn.seed_worker_from_torch'),
    # Checks the annotations and images as they load (docs/bad_data.md).
    dataset=dict(type='ms_rcnn.CheckedCocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'), pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=2,
    persistent_workers=False,  # evaluated once a run; also lets num_workers=0 be set alone
    dataset=dict(type='ms_rcnn.CheckedCocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.02, momentum=0.9, weight_decay=0.0001),
                     clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=300),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.75), int(max_epochs * 0.92)], gamma=0.1)
]
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=2, max_keep_ckpts=2))
randomness = dict(seed=0)
custom_imports = dict(imports=['ms_rcnn'], allow_failed_imports=False)
# RNGStateHook saves the random generators' states in checkpoints so that --resume continues
# bit-exactly; CheckFiniteLossHook stops on a NaN/inf loss before it can be checkpointed;
# NumClassCheckHook (mmdet's) stops a run whose heads' num_classes differ from the classes.
custom_hooks = [dict(type='ms_rcnn.RNGStateHook'), dict(type='ms_rcnn.CheckFiniteLossHook'),
                dict(type='NumClassCheckHook')]

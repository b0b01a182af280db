# A few-second training run on the synthetic toy data of ms_rcnn.testing.make_toy_coco, for tests.
_base_ = '../../configs/small_data/ms-rcnn_r18_fpn_coco-person.py'

data_root = 'set-with---data-root/'
metainfo = dict(classes=('disc', 'star'), palette=[(220, 20, 60), (20, 60, 220)])
image_scale = (128, 96)
model = dict(
    neck=dict(out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64, anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(num_classes=2, in_channels=64, conv_out_channels=64,
                       fc_out_channels=128),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(num_classes=2, in_channels=64, conv_out_channels=64),
        mask_iou_head=dict(num_classes=2, in_channels=64, conv_out_channels=64,
                           fc_out_channels=128)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
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
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(metainfo=metainfo, pipeline=train_pipeline,
                 filter_cfg=dict(filter_empty_gt=True, min_size=0)))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
optim_wrapper = dict(optimizer=dict(lr=0.005))
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=3, save_best=None),
                     visualization=dict(draw=False))
env_cfg = dict(dist_cfg=dict(backend='gloo'))

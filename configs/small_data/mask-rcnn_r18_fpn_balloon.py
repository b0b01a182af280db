# Mask R-CNN twin of ms-rcnn_r18_fpn_balloon.py on the Balloon dataset, from scratch.
# First convert the VIA annotations (outside the data root):
#   python tools/dataset_converters/balloon2coco.py ../shared/data/balloon work_dirs/balloon_coco
# then train with --data-root work_dirs/balloon_coco (the default below).
_base_ = './mask-rcnn_r18_fpn_coco-person.py'

data_root = 'work_dirs/balloon_coco/'
# No palette: a child config with more classes would inherit one too short to draw them.
metainfo = dict(classes=('balloon', ))
image_scale = (512, 384)
max_epochs = 24

train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=300),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.75), int(max_epochs * 0.92)], gamma=0.1)
]
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=2))

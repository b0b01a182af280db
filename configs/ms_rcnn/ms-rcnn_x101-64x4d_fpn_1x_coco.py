_base_ = './ms-rcnn_x101-32x4d_fpn_1x_coco.py'
model = dict(
    backbone=dict(groups=64,
                  init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))

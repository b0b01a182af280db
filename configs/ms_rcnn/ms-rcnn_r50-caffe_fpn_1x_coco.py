# ResNet-50 caffe-style backbone (as mmdet's published MS R-CNN models), 12 epochs.
_base_ = './ms-rcnn_r50_fpn_1x_coco.py'
model = dict(
    data_preprocessor=dict(mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0],
                           bgr_to_rgb=False),
    backbone=dict(
        norm_cfg=dict(requires_grad=False),
        style='caffe',
        init_cfg=dict(type='Pretrained',
                      checkpoint='open-mmlab://detectron2/resnet50_caffe')))

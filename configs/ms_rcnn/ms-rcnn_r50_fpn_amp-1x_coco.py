# Mixed precision (fp16 autocast with dynamic loss scaling); the MaskIoU loss stays in fp32.
_base_ = './ms-rcnn_r50_fpn_1x_coco.py'
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

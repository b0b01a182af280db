"""Our registries: one child of each of mmdet's, so that what a user's config inherits from an
``ms_rcnn::`` config (tagged ``_scope_='ms_rcnn'`` by mmengine) is built from mmdet's classes."""
import mmdet.registry as mmdet_registry
import mmengine.registry as mmengine_registry
import pytest
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import Registry

import ms_rcnn.registry as ours

MMDET_REGISTRIES = sorted(name for name, value in vars(mmdet_registry).items()
                          if isinstance(value, Registry) and value.scope == 'mmdet')


def test_mmdet_still_has_the_registries_we_mirror():
    assert len(MMDET_REGISTRIES) == 20 and 'TRANSFORMS' in MMDET_REGISTRIES


@pytest.mark.parametrize('name', MMDET_REGISTRIES)
def test_every_mmdet_registry_has_our_child(name):
    child = getattr(ours, name)
    assert child.parent is getattr(mmdet_registry, name)
    assert child.scope == 'ms_rcnn' and child.name == child.parent.name


def test_our_function_registry_hangs_under_mmengines():
    assert ours.FUNCTIONS.parent is mmengine_registry.FUNCTIONS
    assert ours.FUNCTIONS.scope == 'ms_rcnn'


def test_a_child_of_a_small_data_config_builds_the_pipelines_it_inherits(tmp_path):
    """A user's config reusing our pipelines gets mmdet's LoadAnnotations (with masks), not
    mmcv's class of the same name from mmengine's root registry, which has no ``with_mask``."""
    from mmdet.datasets.transforms import LoadAnnotations
    path = tmp_path / 'child.py'
    path.write_text("_base_ = 'ms_rcnn::small_data/ms-rcnn_r18_fpn_coco-person.py'\n"
                    "train_dataloader = dict(dataset=dict(\n"
                    "    pipeline={{_base_.train_pipeline}}))\n")
    cfg = Config.fromfile(str(path))
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert {step.get('_scope_') for step in pipeline} == {'ms_rcnn'}  # the premise
    loading = [t for t in Compose(pipeline).transforms if type(t).__name__ == 'LoadAnnotations']
    assert len(loading) == 1 and type(loading[0]) is LoadAnnotations
    assert loading[0].with_mask


@pytest.mark.parametrize('registry, name, module', [
    ('PARAM_SCHEDULERS', 'MultiStepLR', 'mmengine.optim.scheduler'),
    ('VISUALIZERS', 'DetLocalVisualizer', 'mmdet.visualization'),
    ('DATA_SAMPLERS', 'AspectRatioBatchSampler', 'mmdet.datasets.samplers'),
    ('LOOPS', 'EpochBasedTrainLoop', 'mmengine.runner'),
])
def test_our_scope_finds_mmdets_and_mmengines_classes(registry, name, module):
    root = getattr(mmengine_registry, registry)
    with root.switch_scope_and_registry('ms_rcnn') as found:
        assert found is getattr(ours, registry)
        cls = found.get(name)
    assert cls is not None and cls.__module__.startswith(module), cls

import os.path as osp

import pytest

from ms_rcnn.testing import REPO_ROOT, make_toy_coco

TOY_CONFIG = osp.join(REPO_ROOT, 'tests', 'data', 'toy_ms-rcnn.py')


@pytest.fixture(scope='session')
def toy_root(tmp_path_factory):
    """A synthetic COCO-style dataset (4 train, 4 val images of 96x128)."""
    root = tmp_path_factory.mktemp('toy_coco')
    make_toy_coco(str(root))
    return str(root)

"""Packaging for ms_rcnn.

Like OpenMMLab's own packages, the configs, tools and model index are placed under
``ms_rcnn/.mim`` so that ``mim train/test ms_rcnn ...`` and ``_base_ = 'ms_rcnn::...'`` work
from an installed package: copied for ``pip install .``, symlinked for ``pip install -e .``.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import setup

MIM_FILES = ['configs', 'tools', 'model-index.yml']


def add_mim_extension() -> None:
    """Copy (install, wheel, sdist) or link (develop) the mim files into ms_rcnn/.mim."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'install', 'build')):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_dir = osp.join(root, 'ms_rcnn', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup()

"""Train a detector with ms_rcnn's modules registered (mmdet's tools/train.py interface)."""
import argparse
import os
import sys

from mmengine.config import Config, DictAction
from mmengine.device import get_device
from mmengine.registry import RUNNERS
from mmengine.runner import Runner, find_latest_checkpoint

import ms_rcnn  # noqa: F401  registers modules and the safe checkpoint loader
from ms_rcnn.engine import CheckpointFitHook
from ms_rcnn.utils.checkpoint import missing_file_reason
from ms_rcnn.utils.cli import run_tool
from ms_rcnn.utils.config import (check_pretrained_weights_loadable, evaluator_mismatches,
                                  load_config, shorten_training)
from mmdet.utils import setup_cache_size_limit_of_dynamo


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or without a value from the latest one in work_dir')
    parser.add_argument('--data-root', help='dataset root to use instead of the config\'s')
    parser.add_argument('--max-iters', type=int,
                        help='train for this many iterations instead, then evaluate and save '
                             'once (a quick check of a config; epoch-based ones too)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


#: The devices that mmengine's ``AmpOptimWrapper`` trains on.
AMP_DEVICES = ('cuda', 'npu', 'mlu', 'musa')


def is_amp(optim_wrapper: dict) -> bool:
    """Whether an ``optim_wrapper`` config trains in mixed precision (``AmpOptimWrapper``,
    with or without a scope prefix)."""
    return str(optim_wrapper.get('type', 'OptimWrapper')).split('.')[-1] == 'AmpOptimWrapper'


def build_config(args) -> Config:
    """The config with command-line overrides applied."""
    cfg = load_config(args.config, args.cfg_options, args.data_root, args.work_dir,
                      args.launcher)
    if args.max_iters is not None:
        shorten_training(cfg, args.max_iters)
    if args.amp and not is_amp(cfg.optim_wrapper):
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    # mmengine's AmpOptimWrapper accepts these devices only (else an assertion deep in the build)
    if is_amp(cfg.get('optim_wrapper') or {}) and get_device() not in AMP_DEVICES:
        asked = ('--amp' if args.amp else f'{args.config}: optim_wrapper.type='
                 f'{cfg.optim_wrapper.type!r} (mixed precision)')
        raise SystemExit(f'error: {asked} needs a GPU; it does not train on {get_device()}: '
                         f'train {"without it" if args.amp else "a config without it"} here')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('error: --auto-scale-lr needs `auto_scale_lr.base_batch_size` '
                             f'in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
        if find_latest_checkpoint(cfg.work_dir) is None:
            print(f'--resume: no checkpoint in {cfg.work_dir}; training starts from scratch',
                  file=sys.stderr)
    elif args.resume is not None:
        if '://' not in args.resume and not os.path.isfile(args.resume):
            raise SystemExit(f'error: --resume: checkpoint {args.resume} '
                             f'{missing_file_reason(args.resume)}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    check_pretrained_weights_loadable(cfg, args.config)
    for problems in evaluator_mismatches(cfg, 'val'):
        for problem in problems:  # the metric stops at the first image its file lacks
            print(f'warning: {problem}', file=sys.stderr)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if cfg.get('resume'):
        runner.register_hook(CheckpointFitHook())
    runner.train()


if __name__ == '__main__':
    run_tool(main)

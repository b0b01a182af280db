"""Test (evaluate) a checkpoint with ms_rcnn's modules registered."""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import ms_rcnn  # noqa: F401  registers modules and the safe checkpoint loader
from ms_rcnn.engine import CheckpointFitHook
from ms_rcnn.utils.checkpoint import missing_file_reason
from ms_rcnn.utils.cli import run_tool
from ms_rcnn.utils.config import load_config
from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmdet.utils import setup_cache_size_limit_of_dynamo


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file, or a URL that mmengine downloads')
    parser.add_argument('--work-dir', help='the directory to save the evaluation metrics')
    parser.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory (under work_dir) for painted images')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--data-root', help='dataset root to use instead of the config\'s')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    setup_cache_size_limit_of_dynamo()
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint {args.checkpoint} '
                         f'{missing_file_reason(args.checkpoint)}')
    cfg = load_config(args.config, args.cfg_options, args.data_root, args.work_dir,
                      args.launcher)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise SystemExit(f'error: --out must be a .pkl file, got {args.out}')
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.register_hook(CheckpointFitHook())
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    run_tool(main)

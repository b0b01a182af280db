"""The quick demo: train a small MS R-CNN on real instance masks, evaluate, analyse, visualise.

Without arguments it obtains real data from PyPI alone (the 2-D nuclei example of the stardist
wheel, tiled), trains a ResNet-18-FPN MS R-CNN from scratch (on the GPU if there is one, else
the CPU: 10-25 minutes on 2 cores), evaluates COCO bbox/segm AP with pycocotools, runs the
MaskIoU analysis (tools/analysis_tools/mask_score_analysis.py) and draws predictions with both
scores.

Point it at other COCO-style data with a config of configs/small_data/ and --data-root, e.g.
    python tools/demo.py --config configs/small_data/ms-rcnn_r18_fpn_coco-person.py \
        --data-root ../shared/data/coco_person/
"""
import argparse
import json
import os.path as osp
import time

from mmengine.runner import Runner

import ms_rcnn  # noqa: F401  registers modules and the safe checkpoint loader
from ms_rcnn.analysis import format_report
from ms_rcnn.apis import analyse_checkpoint, save_visualizations
from ms_rcnn.demo_data import make_nuclei_coco
from ms_rcnn.utils.cli import checked_device, run_tool
from ms_rcnn.utils.config import load_config, package_config, shorten_training
from ms_rcnn.utils.json_report import write_json

DEMO_CONFIG = package_config(osp.join('small_data', 'ms-rcnn_r18_fpn_nuclei-demo.py'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEMO_CONFIG, help='config to train')
    parser.add_argument('--data-root',
                        help='COCO-style data root (default: for the default config the '
                             'stardist nuclei, downloaded; for another config its own)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'),
                        help='where everything is written')
    parser.add_argument('--cache-dir', default=osp.join(osp.expanduser('~'), '.cache', 'ms_rcnn'),
                        help='where downloaded data is kept')
    parser.add_argument('--max-iters', type=int,
                        help='train for this many iterations instead (any config)')
    parser.add_argument('--device', default='cpu', help='device for the analysis')
    return parser.parse_args(argv)


def last_val_metrics(scalars_file: str) -> dict:
    """The last COCO evaluation that mmengine's LocalVisBackend logged (empty if none)."""
    metrics = {}
    if osp.isfile(scalars_file):
        with open(scalars_file) as f:
            for line in f:
                record = json.loads(line)
                if any(k.startswith('coco/') for k in record):
                    metrics = {k: v for k, v in record.items() if k.startswith('coco/')}
    return metrics


def main(argv=None):
    args = parse_args(argv)
    checked_device(args.device)
    start = time.time()
    work_dir = osp.abspath(args.work_dir)
    data_root = args.data_root
    if data_root is None and osp.realpath(args.config) == osp.realpath(DEMO_CONFIG):
        data_root = osp.join(args.cache_dir, 'nuclei_coco')
        print(f'[demo] preparing the stardist nuclei example in {data_root}')
        make_nuclei_coco(data_root, args.cache_dir)
    cfg = load_config(args.config, data_root=data_root, work_dir=work_dir)
    if args.max_iters is not None:
        shorten_training(cfg, args.max_iters)
    runner = Runner.from_cfg(cfg)
    runner.train()  # ends with the COCO bbox/segm evaluation of the val split
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics = last_val_metrics(osp.join(runner.log_dir, 'vis_data', 'scalars.json'))
    train_minutes = (time.time() - start) / 60

    report = analyse_checkpoint(args.config, checkpoint, osp.join(work_dir, 'analysis'),
                                data_root=data_root, device=args.device)
    samples = report.pop('_samples')
    classes = runner.train_dataloader.dataset.metainfo['classes']
    pictures = save_visualizations(samples, classes, osp.join(work_dir, 'vis'))
    summary = dict(config=args.config, data_root=data_root or cfg.get('data_root'),
                   checkpoint=checkpoint,
                   train_and_eval_minutes=round(train_minutes, 1),
                   coco_metrics={k: float(v) for k, v in metrics.items()},
                   analysis=report, visualizations=pictures)
    write_json(osp.join(work_dir, 'demo_summary.json'), summary)

    print('\n[demo] results')
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        if key in metrics:
            print(f'  {key:<18} {100 * float(metrics[key]):.1f}')
    print(format_report(report))
    print('\n[demo] outputs')
    print(f'  work dir and logs:   {work_dir}')
    print(f'  checkpoint:          {checkpoint}')
    print(f"  analysis summary:    {report['summary']}")
    print(f"  analysis figure:     {report['figure']}")
    print(f'  visualizations:      {osp.dirname(pictures[0]) if pictures else "(none)"}')
    print(f"  demo summary:        {osp.join(work_dir, 'demo_summary.json')}")
    print(f'  total time:          {(time.time() - start) / 60:.1f} min')
    return summary


if __name__ == '__main__':
    run_tool(main)

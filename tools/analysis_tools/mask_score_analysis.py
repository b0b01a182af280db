"""Does the mask score track mask quality? Run a checkpoint over the test split and report.

For every detection: classification score, predicted MaskIoU, mask score and the true IoU of its
mask with the best ground-truth instance of its class. Reports Pearson/Spearman correlations
with the true IoU, the MaskIoU mean absolute error, and COCO segm AP with the masks ranked by
classification score, by mask score, and by classification score x true IoU (upper bound).
Works for plain Mask R-CNN checkpoints too (classification-score rows only).

Example:
    python tools/analysis_tools/mask_score_analysis.py CONFIG CKPT --out-dir work_dirs/analysis
"""
import argparse

import ms_rcnn  # noqa: F401  registers modules and the safe checkpoint loader
from ms_rcnn.analysis import format_report
from ms_rcnn.apis import analyse_checkpoint
from ms_rcnn.utils.cli import checked_device, run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='work_dirs/mask_score_analysis',
                        help='where summary.json and analysis.png go')
    parser.add_argument('--data-root', help='dataset root to use instead of the config\'s')
    parser.add_argument('--device', default='cpu', help='inference device, e.g. cuda:0')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checked_device(args.device)
    report = analyse_checkpoint(args.config, args.checkpoint, args.out_dir, args.data_root,
                                args.device)
    report.pop('_samples')
    print(format_report(report))
    print(f"summary: {report['summary']}\nfigure:  {report['figure']}")
    return report


if __name__ == '__main__':
    run_tool(main)

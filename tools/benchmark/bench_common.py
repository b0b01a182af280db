"""Shared helpers of the ms_rcnn benchmarks in this folder (not a benchmark itself).

Every benchmark runs all its sides in one process, interleaving repeats (A, B, A, B, ...), so
slow drifts of the machine (thermal state, other jobs) hit every side alike. Each timed call is
bracketed by ``torch.cuda.synchronize`` on CUDA; untimed preparation (seeding, copying inputs,
garbage collection) happens before the clock starts.
"""
import argparse
import ctypes
import datetime
import gc
import json
import os
import os.path as osp
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:  # run from anywhere without installing ms_rcnn
    sys.path.insert(0, REPO_ROOT)


# ---------------------------------------------------------------------------------------------
# Command line and header
# ---------------------------------------------------------------------------------------------
def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def add_common_args(parser: argparse.ArgumentParser, default_threads: Optional[int],
                    default_repeats: int) -> None:
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=default_device(),
                        help='device of the models and tensors (default: cuda if available)')
    threads_help = ('torch.set_num_threads (intra-op CPU threads); default: '
                    + (f'{default_threads}' if default_threads else "torch's default"))
    parser.add_argument('--threads', type=positive_int, default=default_threads,
                        help=threads_help)
    parser.add_argument('--repeats', type=positive_int, default=default_repeats,
                        help='timed repeats of each side (interleaved A, B, A, B, ...)')
    parser.add_argument('--warmup', type=non_negative_int, default=None,
                        help='untimed calls of each side before timing (default: 1 on CPU, '
                             '3 on CUDA)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic inputs')
    parser.add_argument('--small', action='store_true',
                        help='tiny sizes, for smoke tests only (numbers are meaningless)')
    parser.add_argument('--json', metavar='OUT', help='also write the results to this file')


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < low:
        raise argparse.ArgumentTypeError(f'must be at least {low}, got {value}')
    return value


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and check --device and --json; returns the torch device."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.json:
        check_writable(args.json)
    if args.warmup is None:
        args.warmup = 3 if args.device == 'cuda' else 1
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda asked for, but torch sees no CUDA device')
    return torch.device(args.device)


def versions() -> Dict[str, str]:
    import mmcv
    import mmdet
    import mmengine

    import ms_rcnn
    out = dict(python=platform.python_version(), torch=torch.__version__, mmcv=mmcv.__version__,
               mmdet=mmdet.__version__, mmengine=mmengine.__version__,
               ms_rcnn=ms_rcnn.__version__, numpy=np.__version__)
    try:
        import shapely
        out['shapely'] = shapely.__version__
    except ImportError:
        pass
    return out


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_state() -> str:
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'ms_rcnn'], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or 'unknown') + (' (ms_rcnn/ has uncommitted changes)' if dirty else '')
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def device_info(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = dict(device=str(device), torch_threads=torch.get_num_threads(),
                                cpu=_cpu_model(), cpu_count=os.cpu_count())
    if hasattr(os, 'sched_getaffinity'):
        info['cpus_usable'] = len(os.sched_getaffinity(0))
    if hasattr(os, 'getloadavg'):
        info['loadavg_1m'] = round(os.getloadavg()[0], 2)
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    return info


def make_header(title: str, args: argparse.Namespace, device: torch.device,
                sizes: Dict[str, Any]) -> Dict[str, Any]:
    """Print and return everything needed to interpret the numbers."""
    header = dict(benchmark=title,
                  date=datetime.datetime.now().isoformat(timespec='seconds'),
                  host=platform.node(), **device_info(device), versions=versions(),
                  git=_git_state(), repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                  small=args.small, sizes=sizes, argv=sys.argv[1:])
    print(f'=== {title} ===')
    for key in ('date', 'device', 'torch_threads', 'cpu', 'cpu_count', 'cpus_usable',
                'loadavg_1m', 'gpu', 'gpu_memory_gib', 'cuda', 'cudnn', 'git'):
        if key in header:
            print(f'{key:>14}: {header[key]}')
    print(f'{"versions":>14}: ' + ', '.join(f'{k} {v}' for k, v in header['versions'].items()))
    print(f'{"timing":>14}: {args.repeats} interleaved repeats per side after {args.warmup} '
          'warm-up call(s); medians reported')
    for key, value in sizes.items():
        print(f'{key:>14}: {value}')
    if args.small:
        print('    NOTE: --small sizes are for smoke tests; the numbers mean nothing.')
    print()
    return header


def check_writable(path: str) -> None:
    """Stop before any timing when ``--json`` names a file that cannot be written."""
    directory = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f'error: --json {path}: cannot create {directory}: '
                         f'{exc.strerror or exc}') from None
    if osp.isdir(path):
        raise SystemExit(f'error: --json {path} is a directory, not a file')
    if not os.access(directory, os.W_OK):
        raise SystemExit(f'error: --json {path}: {directory} is not writable')


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (checked by ``setup()``) as strict JSON, atomically.

    Tensors and numpy values become lists and numbers, anything else its ``str``; a NaN or
    infinite float (a guard or mean with nothing to measure) becomes ``null``, as in every
    report of ``ms_rcnn``, so that strict readers (``jq``, JavaScript) take the file.
    """
    if not path:
        return
    from ms_rcnn.utils.json_report import write_json as write_strict_json
    plain = json.loads(json.dumps(payload, default=_jsonable))  # Python's json keeps NaN
    try:
        write_strict_json(path, plain)
    except OSError as exc:
        raise SystemExit(f'error: cannot write {path}: {exc.strerror or exc}') from None
    print(f'results written to {path}')


def _jsonable(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def count_host_syncs(fn: Callable[[], Any], device: torch.device) -> Optional[int]:
    """How many synchronising operations torch sees in one call of ``fn`` (a lower bound).

    CUDA only (None elsewhere): the call runs under ``torch.cuda.set_sync_debug_mode('warn')``,
    which warns at the synchronising operations torch instruments (``item``, ``nonzero``, a
    device-to-host or blocking host-to-device copy, ...); the warnings are counted. Waits it
    does not instrument (a copy from pageable memory, event waits, syncs inside extensions)
    are caught by :func:`host_waits`.
    """
    if device.type != 'cuda':
        return None
    sync(device)
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum('synchroniz' in str(w.message) for w in caught)


def host_waits(fn: Callable[[], Any], device: torch.device) -> Optional[bool]:
    """Whether one call of ``fn`` makes the host wait for device work queued before it (any
    kind of wait; :func:`ms_rcnn.testing.host_waits_for_device`). CUDA only, None elsewhere."""
    if device.type != 'cuda':
        return None
    from ms_rcnn.testing import host_waits_for_device
    return host_waits_for_device(fn, device)


_LIBC = None


def _malloc_trim() -> None:
    """Return freed heap pages to the OS (glibc), so RSS baselines are honest."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL('libc.so.6')
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _proc_status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            match = re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.M)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _can_reset_peak_rss() -> bool:
    if _proc_status_kib('VmHWM') is None:
        return False
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of one call.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (absolute peak
    of tensors allocated by torch, weights and optimizer state included).
    CPU (Linux): the increase of the process's peak RSS over its RSS just before the call.
    Freed heap pages are handed back first (``malloc_trim``) and the kernel's peak counter is
    reset (``/proc/self/clear_refs``), so memory reused from an earlier call is counted again.
    Without /proc, psutil (if installed) samples RSS every millisecond in a thread
    (approximate); without either, memory is not measured.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == 'cuda':
            self.method = 'cuda max_memory_allocated (absolute peak)'
        elif _can_reset_peak_rss():
            self.method = 'peak RSS increase over the pre-call RSS (/proc VmHWM, reset per call)'
        else:
            try:
                import psutil  # noqa: F401
                self.method = 'peak RSS increase, sampled every 1 ms with psutil (approximate)'
            except ImportError:
                self.method = None
        self.note = ('CPU memory not measured: no /proc/self/clear_refs and psutil is not '
                     'installed' if self.method is None else self.method)
        self._sampler = None

    def start(self) -> None:
        if self.method is None:
            return
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _malloc_trim()
        if self.method.startswith('peak RSS increase over'):
            self._base = _proc_status_kib('VmRSS') * 1024
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
        else:
            import psutil
            proc = psutil.Process()
            self._base = proc.memory_info().rss
            self._peak = self._base
            self._stop = threading.Event()

            def sample():
                while not self._stop.is_set():
                    self._peak = max(self._peak, proc.memory_info().rss)
                    time.sleep(0.001)

            self._sampler = threading.Thread(target=sample, daemon=True)
            self._sampler.start()

    def stop(self) -> Optional[int]:
        """Bytes (see the class doc), or None when not measured."""
        if self.method is None:
            return None
        if self.device.type == 'cuda':
            return int(torch.cuda.max_memory_allocated(self.device))
        if self._sampler is None:
            return max(0, _proc_status_kib('VmHWM') * 1024 - self._base)
        self._stop.set()
        self._sampler.join()
        self._sampler = None
        return max(0, self._peak - self._base)


class Side:
    """One side of a comparison.

    Args:
        name (str): Label in the tables.
        run (callable): The timed call; takes the value returned by ``prepare``.
        prepare (callable, optional): Untimed set-up before each call (``prepare(i)`` for the
            i-th call of this side, warm-up calls included, counting from 0).
    """

    def __init__(self, name: str, run: Callable[[Any], Any],
                 prepare: Optional[Callable[[int], Any]] = None):
        self.name, self.run, self.prepare = name, run, prepare


def run_interleaved(sides: Sequence[Side], repeats: int, warmup: int, device: torch.device,
                    memory: bool = False, on_result: Optional[Callable] = None
                    ) -> Dict[str, Dict[str, Any]]:
    """Time the sides in turn, ``warmup`` untimed rounds then ``repeats`` timed rounds.

    Within a round the sides run in the given order (A, B, A, B, ...). ``on_result(name,
    round, output)`` sees each call's output after the clock stops (round < 0: warm-up).

    Returns:
        dict: Per side: ``times_s`` (list), ``median_s``, ``min_s``, ``mean_s``, and with
        ``memory`` also ``mem_bytes`` (list) and ``mem_median_bytes``/``mem_max_bytes``.
    """
    meter = PeakMemory(device) if memory else None
    out = {s.name: dict(times_s=[], mem_bytes=[]) for s in sides}
    calls = {s.name: 0 for s in sides}
    for rnd in range(-warmup, repeats):
        for side in sides:
            arg = side.prepare(calls[side.name]) if side.prepare else None
            calls[side.name] += 1
            gc.collect()
            if meter:
                meter.start()
            sync(device)
            start = time.perf_counter()
            result = side.run(arg)
            sync(device)
            elapsed = time.perf_counter() - start
            mem = meter.stop() if meter else None
            if on_result:
                on_result(side.name, rnd, result)
            del result
            if rnd >= 0:
                out[side.name]['times_s'].append(elapsed)
                if mem is not None:
                    out[side.name]['mem_bytes'].append(mem)
    for stats in out.values():
        times = stats['times_s']
        stats.update(median_s=statistics.median(times), min_s=min(times),
                     mean_s=statistics.fmean(times))
        if stats['mem_bytes']:
            stats.update(mem_median_bytes=int(statistics.median(stats['mem_bytes'])),
                         mem_max_bytes=max(stats['mem_bytes']))
        else:
            del stats['mem_bytes']
    if meter:
        for stats in out.values():
            stats['mem_method'] = meter.note
    return out


class ForwardTimer:
    """Time spent in one module's ``forward`` during a timed call, without adding syncs.

    Pre- and post-forward hooks read the host clock on the CPU and record CUDA events on
    CUDA, so the call being timed around it runs as before. After each call has
    synchronised, :meth:`end_call` adds up the spans it saw; ``per_call_s`` holds the totals.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.cuda = device.type == 'cuda'
        self.spans: List[Any] = []
        self.per_call_s: List[float] = []
        self._begin: Any = None
        self._handles = [module.register_forward_pre_hook(self._start),
                         module.register_forward_hook(self._stop)]

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _start(self, module, inputs):
        self._begin = self._now()

    def _stop(self, module, inputs, output):
        self.spans.append((self._begin, self._now()))

    def end_call(self, keep: bool = True) -> None:
        """Close the spans of the call that just finished (``keep=False``: a warm-up)."""
        total = sum(begin.elapsed_time(end) / 1e3 if self.cuda else end - begin
                    for begin, end in self.spans)
        self.spans = []
        if keep:
            self.per_call_s.append(total)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def ratio(results: Dict[str, Dict[str, Any]], slow: str, fast: str) -> Dict[str, float]:
    """``slow`` time / ``fast`` time: ratio of the medians, and the median of the ratios of
    the same round (more robust when the machine's speed drifts)."""
    a, b = results[slow]['times_s'], results[fast]['times_s']
    return dict(ratio_of_medians=results[slow]['median_s'] / results[fast]['median_s'],
                median_paired_ratio=statistics.median(x / y for x, y in zip(a, b)))


def ms(seconds: float) -> str:
    return f'{seconds * 1e3:.2f}'


def mib(num_bytes: Optional[int]) -> str:
    return '-' if num_bytes is None else f'{num_bytes / 2**20:.0f}'


def print_table(header: List[str], rows: List[List[Any]]) -> None:
    cells = [[str(c) for c in row] for row in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, row in enumerate(cells):
        print('  '.join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(row, widths))))
        if j == 0:
            print('  '.join('-' * w for w in widths))
    print()


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------
def star_polygons(rng: np.random.Generator, num: int, height: int, width: int) -> List[list]:
    """``num`` instances, each one random simple star-shaped polygon (flat x0, y0, x1, ...)."""
    from ms_rcnn.testing import toy_polygon
    return [[toy_polygon(rng, width, height)] for _ in range(num)]


def polygon_boxes(polygons: List[list]) -> np.ndarray:
    """Tight boxes (x1, y1, x2, y2) of polygon instances, float32 (G, 4)."""
    boxes = []
    for parts in polygons:
        pts = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in parts])
        boxes.append([*pts.min(0), *pts.max(0)])
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def jittered_boxes(rng: np.random.Generator, gt_boxes: np.ndarray, num: int, height: int,
                   width: int, min_iou: float = 0.5, sigma: float = 0.1) -> tuple:
    """``num`` proposals, each a GT box with Gaussian jitter (sigma x box size per coordinate),
    clipped to the image, redrawn until its IoU with its GT box exceeds ``min_iou``.

    Returns:
        tuple: float32 boxes (num, 4) and the index of each box's GT box (num, ).
    """
    inds = rng.integers(0, len(gt_boxes), num)
    gt = gt_boxes[inds].astype(np.float64)
    boxes = np.empty_like(gt)
    todo = np.arange(num)
    while len(todo):
        g = gt[todo]
        size = np.concatenate([g[:, 2:] - g[:, :2]] * 2, 1)
        b = g + rng.normal(0.0, sigma, g.shape) * size
        b[:, 0::2] = b[:, 0::2].clip(0, width)
        b[:, 1::2] = b[:, 1::2].clip(0, height)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1.0)
        lt, rb = np.maximum(b[:, :2], g[:, :2]), np.minimum(b[:, 2:], g[:, 2:])
        inter = np.prod((rb - lt).clip(min=0), 1)
        union = np.prod(b[:, 2:] - b[:, :2], 1) + np.prod(g[:, 2:] - g[:, :2], 1) - inter
        ok = inter / union > min_iou
        boxes[todo[ok]] = b[ok]
        todo = todo[~ok]
    return boxes.astype(np.float32), inds


def synthetic_image(rng: np.random.Generator, polygons: List[list], height: int,
                    width: int) -> np.ndarray:
    """A (3, H, W) uint8 image: dark noise with the instances filled in bright colours."""
    import cv2
    img = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for parts in polygons:
        colour = tuple(int(c) for c in rng.integers(100, 256, 3))
        cv2.fillPoly(img, [np.round(np.asarray(p).reshape(-1, 2)).astype(np.int32)
                           for p in parts], colour)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def detection_batch(rng: np.random.Generator, batch: int, height: int, width: int,
                    num_classes: int, num_gt=(3, 5), mask_type: str = 'polygon',
                    with_gt: bool = True) -> dict:
    """A collated batch as mmdet's dataloader gives it: ``inputs`` (uint8 CHW tensors) and
    ``data_samples`` (DetDataSample with metainfo and, with ``with_gt``, gt_instances holding
    boxes, labels and PolygonMasks or uint8 BitmapMasks)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    from mmengine.structures import InstanceData
    inputs, samples = [], []
    for idx in range(batch):
        n = int(rng.integers(num_gt[0], num_gt[1] + 1))
        polys = star_polygons(rng, n, height, width)
        inputs.append(torch.from_numpy(synthetic_image(rng, polys, height, width)))
        sample = DetDataSample(metainfo=dict(
            img_id=idx, img_path=f'<synthetic {idx}>', ori_shape=(height, width),
            img_shape=(height, width), scale_factor=(1.0, 1.0), flip=False,
            flip_direction=None))
        if with_gt:
            masks = PolygonMasks(polys, height, width)
            if mask_type == 'bitmap':
                masks = BitmapMasks(masks.to_bitmap().masks.astype(np.uint8), height, width)
            sample.gt_instances = InstanceData(
                bboxes=torch.from_numpy(polygon_boxes(polys)),
                labels=torch.from_numpy(rng.integers(0, num_classes, n)).long(), masks=masks)
            sample.ignored_instances = InstanceData(bboxes=torch.zeros((0, 4)),
                                                    labels=torch.zeros((0, ), dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def default_size(args: argparse.Namespace, device: torch.device) -> tuple:
    """``--size`` if given, else (H, W) for the device: 800x1216 on CUDA, 512x672 on the CPU,
    128x160 with ``--small``."""
    if args.size is not None:
        return args.size
    if args.small:
        return (128, 160)
    return (800, 1216) if device.type == 'cuda' else (512, 672)


def parse_size(text: str) -> tuple:
    """'HxW' -> (H, W), each at least 1."""
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must look like 512x672, got {text!r}')
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f'height and width must be at least 1, got {text!r}')
    return h, w


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def mmdet_config_path(rel: str) -> str:
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', rel)
    if not osp.exists(path):
        raise SystemExit(f'mmdet config not found: {path} (is mmdet installed with its configs?)')
    return path


def ours_config_path(rel: str = 'ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py') -> str:
    return osp.join(REPO_ROOT, 'configs', rel)


def model_config(path: str):
    """The model config of a detector config file, without pretrained-backbone loading."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    return cfg.model


def mmdet_scope():
    """A context in which mmdet's registries resolve plain type names (``MSELoss``) whatever
    default scope a caller left behind (a Runner leaves ``mmengine``'s)."""
    from mmengine.registry import DefaultScope
    return DefaultScope.overwrite_default_scope('mmdet')


def build_model(model_cfg, device: torch.device):
    import copy

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import ms_rcnn  # noqa: F401  (registers the ms_rcnn scope)
    register_all_modules()
    return MODELS.build(copy.deepcopy(model_cfg)).to(device)


def quiet_mmengine() -> None:
    """Keep mmengine's INFO logs (weight initialisation) out of the benchmark's output."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    logger.setLevel(logging.WARNING)
    for handler in logger.handlers:
        handler.setLevel(logging.WARNING)

"""Trim an unpacked mmcv 2.1 source tree so that only some ops get CUDA kernels.

A full CUDA build of mmcv 2.1 compiles 58 ``.cu`` files: about an hour of CPU time (one file
alone takes ~5 minutes), more than a short lease of a GPU machine allows. Mask Scoring R-CNN
needs two of them, ``nms`` and ``roi_align``. After this script, mmcv's own ``setup.py``
builds every op for the CPU as usual and the named ops for CUDA too; every other op, called
on a CUDA tensor, fails with mmcv's own error (no CUDA implementation registered / not
compiled with GPU support) instead of running. The Python API is unchanged: every function
of ``mmcv._ext`` still exists.

What it changes, under ``mmcv/ops/csrc/pytorch``:
- ``cuda/*.cu``: the kernels of other ops are deleted (setup.py globs this folder);
- ``cuda/cudabind.cpp``: only the blocks that register the named ops' CUDA
  implementations are kept (each block declares its kernel launchers, wraps them and ends
  with its ``REGISTER_DEVICE_IMPL`` lines);
- ``*.cpp`` that call CUDA code directly under ``#ifdef MMCV_WITH_CUDA`` (e.g. the rotated
  NMS and sparse convolutions; ``info.cpp`` excepted): compiled as CPU-only files.

Usage: python tools/mmcv_cuda_subset.py MMCV_SOURCE_DIR OP [OP ...]
"""
import argparse
import glob
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Sequence, Tuple

CSRC = osp.join('mmcv', 'ops', 'csrc', 'pytorch')
REGISTER = re.compile(r'REGISTER_DEVICE_IMPL\(\s*(\w+)\s*,\s*CUDA\s*,\s*\w+\s*\)\s*;?')
NEXT_REGISTER = re.compile(r'\s*' + REGISTER.pattern)
CPU_ONLY_LINE = '#undef MMCV_WITH_CUDA  // CUDA kernels of this op not built (mmcv_cuda_subset)\n'


def split_cudabind(text: str) -> Tuple[str, List[str]]:
    """Split ``cudabind.cpp`` into its preamble (the ``#include`` lines) and per-op blocks.

    A block runs from the end of the previous block to its last ``REGISTER_DEVICE_IMPL``
    statement (a block registers one op's forward, backward, ... implementations together).

    Returns:
        tuple: The preamble, and the blocks in file order; joined they give ``text`` back.
    """
    body_start = 0
    for line in text.splitlines(keepends=True):
        if line.strip() and not line.startswith('#include'):
            break
        body_start += len(line)
    preamble, body = text[:body_start], text[body_start:]
    blocks, start = [], 0
    for match in REGISTER.finditer(body):
        # A block ends at a REGISTER statement that is not followed by another one.
        if NEXT_REGISTER.match(body, match.end()):
            continue
        newline = body.find('\n', match.end())
        pos = len(body) if newline < 0 else newline + 1
        blocks.append(body[start:pos])
        start = pos
    if body[start:].strip():
        raise ValueError('cudabind.cpp: text after the last REGISTER_DEVICE_IMPL block')
    if blocks:
        blocks[-1] += body[start:]
    return preamble, blocks


def registered_keys(block: str) -> List[str]:
    """The dispatch keys that a cudabind block registers CUDA implementations for."""
    return REGISTER.findall(block)


def key_belongs_to(key: str, op: str) -> bool:
    """Whether a dispatch key (``nms_impl``, ``roi_align_forward_impl``,
    ``ms_deform_attn_impl_forward``, ...) is one of ``op``'s (not ``roi_align_rotated``'s)."""
    return re.fullmatch(rf'{re.escape(op)}(_(forward|backward))?_impl(_(forward|backward))?',
                        key) is not None


def trim(src: str, ops: Sequence[str]) -> Dict[str, List[str]]:
    """Trim the source tree at ``src`` in place to CUDA kernels of ``ops`` only.

    Raises:
        FileNotFoundError: ``src`` is not an mmcv source tree.
        ValueError: An op has no ``cuda/<op>_cuda.cu`` kernel file or no registered block.

    Returns:
        dict: ``kept`` and ``deleted`` kernel files, ``kept_keys`` (dispatch keys still
        registered for CUDA) and ``cpu_only`` (files compiled without ``MMCV_WITH_CUDA``).
    """
    csrc = osp.join(src, CSRC)
    bind_path = osp.join(csrc, 'cuda', 'cudabind.cpp')
    if not osp.isfile(bind_path):
        raise FileNotFoundError(f'{bind_path} not found: is {src} an unpacked mmcv 2.x source?')
    kernels = sorted(glob.glob(osp.join(csrc, 'cuda', '*.cu')))
    wanted = {osp.join(csrc, 'cuda', f'{op}_cuda.cu') for op in ops}
    missing = sorted(wanted - set(kernels))
    if missing:
        raise ValueError(f'no CUDA kernel file {", ".join(missing)} in {src}')

    with open(bind_path) as f:
        preamble, blocks = split_cudabind(f.read())
    kept_blocks = [b for b in blocks
                   if any(key_belongs_to(k, op) for k in registered_keys(b) for op in ops)]
    for op in ops:
        if not any(key_belongs_to(k, op) for b in kept_blocks for k in registered_keys(b)):
            raise ValueError(f'cudabind.cpp registers no CUDA implementation of {op!r}')

    cpu_only = []
    for path in sorted(glob.glob(osp.join(csrc, '*.cpp'))):
        name = osp.basename(path)[:-len('.cpp')]
        with open(path) as f:
            code = f.read()
        if 'MMCV_WITH_CUDA' in code and name != 'info' and name not in ops:
            with open(path, 'w') as f:
                f.write(CPU_ONLY_LINE + code)
            cpu_only.append(osp.basename(path))
    for path in kernels:
        if path not in wanted:
            os.remove(path)
    with open(bind_path, 'w') as f:
        f.write(preamble + ''.join(kept_blocks))
    return dict(kept=sorted(osp.basename(p) for p in wanted),
                deleted=[osp.basename(p) for p in kernels if p not in wanted],
                kept_keys=[k for b in kept_blocks for k in registered_keys(b)],
                cpu_only=cpu_only)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='unpacked mmcv 2.1 source tree')
    parser.add_argument('ops', nargs='+', help='ops to build CUDA kernels for, e.g. nms roi_align')
    args = parser.parse_args(argv)
    try:
        result = trim(args.src, args.ops)
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f"CUDA kernels kept: {', '.join(result['kept'])}; "
          f"{len(result['deleted'])} others deleted; registered for CUDA: "
          f"{', '.join(result['kept_keys'])}; CPU-only files: {', '.join(result['cpu_only'])}")
    return 0


if __name__ == '__main__':
    sys.exit(main())

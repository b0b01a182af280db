"""Check that the torch this interpreter imports is in the range requirements.txt gives.

`tools/setup_env.sh` runs this before it builds mmcv: an installed torch outside the range
would otherwise be replaced by `pip install -r requirements.txt` (a download of several GB),
after mmcv's ops were compiled against the old one, which they then no longer load with.

Uses only the standard library and pip's vendored ``packaging``, so it runs in a fresh venv.

Usage: python tools/check_torch.py [REQUIREMENTS]   (default: requirements.txt beside tools/)
Exit status: 0 in range, 1 out of range or torch missing, 2 no torch line in REQUIREMENTS.
"""
import os
import re
import sys

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
except ImportError:  # a fresh venv: pip always carries its own copy
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.utils import canonicalize_name

DEFAULT_REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                    'requirements.txt')


def torch_specifier(requirements_text: str) -> str:
    """The version specifier of the ``torch`` requirement, e.g. ``'<2.16,>=2.1'`` ('' if none).

    Reads pip's requirements format: comments, ``\\`` continuations, option lines and
    per-requirement options (``--hash=...``) are skipped; names compare as pip does
    (``Torch`` is ``torch``, ``torch[opt]`` too).
    """
    text = re.sub(r'\\\n', ' ', requirements_text)
    for line in text.splitlines():
        line = re.sub(r'(^|\s)#.*', '', line).strip()   # comments
        if line.startswith('-'):                        # -r FILE, --index-url URL, ...
            continue
        line = re.split(r'\s+--?[A-Za-z]', line)[0]     # --hash=... after a requirement
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) == 'torch':
            return str(requirement.specifier)
    return ''


def in_range(torch_version: str, specifier: str) -> bool:
    """Whether ``torch_version`` (local labels and pre-releases such as ``2.14.0a0+git1``
    included) satisfies ``specifier``."""
    return SpecifierSet(specifier).contains(torch_version, prereleases=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = os.path.normpath(argv[0] if argv else DEFAULT_REQUIREMENTS)
    with open(path) as f:
        specifier = torch_specifier(f.read())
    if not specifier:
        print(f'error: {path} has no torch line with a version range', file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError as exc:
        print(f'error: torch cannot be imported ({exc}); ms_rcnn needs torch{specifier} '
              f'({path})', file=sys.stderr)
        return 1
    if in_range(torch.__version__, specifier):
        return 0
    print(f'error: torch {torch.__version__} is installed ({torch.__file__}), but ms_rcnn is '
          f'tested with torch{specifier} ({path}). `pip install -r requirements.txt` would '
          'replace it with another release, and the mmcv ops built against this one would no '
          f'longer load. Install a torch in that range first, e.g. `{sys.executable} -m pip '
          f'install "torch{specifier}"` (on a machine without a GPU add `--index-url '
          'https://download.pytorch.org/whl/cpu` for a CPU build, not several GB of CUDA '
          'libraries), then run the set-up again.', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())

"""Checks that the installed OpenMMLab stack is one ms_rcnn supports."""
from importlib.metadata import PackageNotFoundError, version

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

#: Supported ranges, [lowest, first unsupported), kept in step with requirements.txt.
SUPPORTED = {
    'mmcv': ('2.0.0', '2.2.0'),
    'mmengine': ('0.10.0', '0.11.0'),
    'mmdet': ('3.3.0', '3.4.0'),
}

INSTALL_HINT = ('Run `bash tools/setup_env.sh` from the ms_rcnn repository, or install '
                '"mmcv>=2.0.0,<2.2.0" (built from source: MMCV_WITH_OPS=1 pip install '
                '--no-build-isolation mmcv==2.1.0; with torch >= 2.14 its setup.py needs '
                '-std=c++20 instead of -std=c++17, which `bash tools/build_mmcv.sh python` '
                'patches), "mmengine>=0.10.0,<0.11.0" and "mmdet>=3.3.0,<3.4.0".')


def unsupported_packages(installed: dict) -> list:
    """Describe each package whose version is missing or outside its supported range.

    Args:
        installed (dict): Package name to version string, or None when not installed.

    Returns:
        list[str]: One line per problem, empty when all is well.
    """
    problems = []
    for name, (low, high) in SUPPORTED.items():
        found = installed.get(name)
        if found is None:
            problems.append(f'{name} is not installed (need >={low},<{high})')
        elif not in_range(found, low, high):
            problems.append(f'{name} {found} is installed (need >={low},<{high})')
    return problems


def in_range(found: str, low: str, high: str) -> bool:
    """Whether version ``found`` satisfies ``>=low,<high`` as pip reads it: a pre-release or
    development release of ``high`` (``2.2.0rc1``) is not below it; no version string is not."""
    try:
        Version(found)
    except InvalidVersion:
        return False
    return SpecifierSet(f'>={low},<{high}').contains(found, prereleases=True)


def installed_versions() -> dict:
    """Versions of the packages in :data:`SUPPORTED` (None when missing)."""
    found = {}
    for name in SUPPORTED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_versions() -> None:
    """Raise ImportError naming every unsupported package and what to install."""
    problems = unsupported_packages(installed_versions())
    if problems:
        raise ImportError('ms_rcnn cannot run with this environment: ' + '; '.join(problems) +
                          '. ' + INSTALL_HINT)

"""What our command-line tools share: bad input ends a run with one line, not a traceback."""
import os
from typing import Any, Callable, Optional, Sequence, Tuple, Type

#: Set (to anything but '' or '0') to see an input error's traceback instead of its one line.
TRACEBACK_ENV = 'MS_RCNN_TRACEBACK'


def input_errors() -> Tuple[Type[BaseException], ...]:
    """The exceptions that mean bad input, each with a message that names the file or field.

    A missing file, a dataset or image our checks refuse, a checkpoint that is not one, is unsafe
    or does not fit the model, a missing dependency that the config needs, and config values that
    contradict each other or the data.
    """
    from ..datasets.bad_data_policy import BadDatasetError
    from ..datasets.checked_coco import BadImageError
    from ..datasets.coco_checks import DatasetInputError
    from .checkpoint import CheckpointMismatchError, NotACheckpointError, UnsafeCheckpointError
    from .config import ConfigError, MissingDependencyError
    return (FileNotFoundError, DatasetInputError, BadDatasetError, BadImageError,
            NotACheckpointError, UnsafeCheckpointError, CheckpointMismatchError,
            MissingDependencyError, ConfigError)


def run_tool(main: Callable[[Optional[Sequence[str]]], Any],
             argv: Optional[Sequence[str]] = None) -> Any:
    """Run a tool's ``main(argv)``; bad input exits with status 1 and ``error: <message>``.

    Other exceptions keep their traceback: they are bugs. ``MS_RCNN_TRACEBACK=1`` keeps it for
    input errors too.
    """
    try:
        return main(argv)
    except input_errors() as exc:
        if os.environ.get(TRACEBACK_ENV, '') not in ('', '0'):
            raise
        raise SystemExit(f'error: {exc}') from None


def checked_device(name: str) -> str:
    """A ``--device`` value that torch can use here, or an input error that says why not.

    Args:
        name (str): E.g. ``'cpu'``, ``'cuda'``, ``'cuda:1'``.

    Returns:
        str: ``name``.

    Raises:
        ConfigError: ``name`` is no device, or names a CUDA device this machine lacks (instead
            of an assertion deep in the model's ``.to``).
    """
    import torch

    from .config import ConfigError
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f'--device {name!r} is not a device ({exc})') from None
    if device.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f'--device {name}: no CUDA device here (torch {torch.__version__}'
                              f'{"" if torch.version.cuda else ", a CPU build"}); use --device cpu')
        if device.index is not None and device.index >= count:
            raise ConfigError(f'--device {name}: only {count} CUDA device(s) here')
    return name

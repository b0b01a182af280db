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

"""What our command-line tools share: bad input ends a run with one line, not a traceback."""
import difflib
import os
import re
from typing import Any, Callable, List, Optional, Sequence, Tuple, Type

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
    show_traceback = os.environ.get(TRACEBACK_ENV, '') not in ('', '0')
    try:
        return main(argv)
    except Exception as exc:
        message = None if show_traceback else input_error_message(exc)
        if message is None:
            raise
        raise SystemExit(f'error: {message}') from None


def input_error_message(exc: BaseException) -> Optional[str]:
    """The one-line report of an exception that means bad input, or None for a bug.

    Bad input is one of :func:`input_errors` (raised here or in a DataLoader worker), or
    mmengine's error for an unknown config ``type=`` (a ``KeyError``).
    """
    worker = worker_error(exc)
    if worker is not None:
        error_type, message, where = worker
        return f'{message} ({where})' if issubclass(error_type, input_errors()) else None
    if isinstance(exc, input_errors()):
        return str(exc)
    if isinstance(exc, KeyError):  # mmengine's registries say so for a misspelt `type=`
        return unregistered_type_message(exc)
    return None


# torch's ExceptionWrapper.reraise: "Caught {type} in DataLoader worker process {n}.\nOriginal
# Traceback (most recent call last): ..."; the traceback's last line is "{module.type}: {msg}".
_WORKER_ERROR = re.compile(r'^Caught (?P<type>\w+) (?P<where>in DataLoader worker process \d+)\.'
                           r'\nOriginal Traceback')


def worker_error(exc: BaseException) -> Optional[Tuple[type, str, str]]:
    """What a DataLoader worker raised, from the exception torch re-raises in the main process.

    torch re-raises a worker's exception as ``type(message)``, or as a ``RuntimeError`` where the
    type cannot be built from one string (ours that take a path and a reason), with the
    worker's whole traceback as the message.

    Returns:
        tuple or None: The worker's exception type, its message and where it was raised (``'in
        DataLoader worker process 0'``); None when ``exc`` is no such re-raise or its type
        cannot be imported.
    """
    text = str(exc)
    match = _WORKER_ERROR.match(text)
    if match is None:
        return None
    lines = text.rstrip('\n').split('\n')
    for index in range(len(lines) - 1, 0, -1):  # the last exception of a chain is last
        name, sep, message = lines[index].partition(': ')
        if sep and name.rsplit('.', 1)[-1] == match.group('type'):
            error_type = import_exception_type(name)
            if error_type is None:
                return None
            message = '\n'.join([message] + lines[index + 1:])
            return error_type, message, match.group('where')
    return None


def import_exception_type(name: str) -> Optional[type]:
    """The exception class a traceback names (``'FileNotFoundError'``, ``'pkg.mod.Error'``)."""
    import builtins
    import importlib
    module_name, _, attr = name.rpartition('.')
    try:
        module = importlib.import_module(module_name) if module_name else builtins
    except ImportError:
        return None
    found = getattr(module, attr, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


# mmengine's build_from_cfg: "{type} is not in the {scope}::{registry name} registry. ..."
_UNREGISTERED = re.compile(r'^(?P<type>\S+) is not in the (?P<scope>[\w.]+)::(?P<registry>[\w ]+) '
                           r'registry\.')


def unregistered_type_message(exc: KeyError) -> Optional[str]:
    """One line for a config ``type=`` that no registry knows, with the closest names.

    Returns:
        str or None: The message, or None when ``exc`` is not mmengine's unknown-type error.
    """
    match = _UNREGISTERED.match(str(exc.args[0]) if exc.args else '')
    if match is None:
        return None
    name, scope, registry = match.group('type', 'scope', 'registry')
    prefix = name.split('.', 1)[0] if '.' in name else None  # 'ms_rcnn.MaskIoUHead'
    candidates = registered_names(scope, registry, prefix)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ''
    return (f"the config's type={name!r} is not a registered {registry} type (default scope "
            f"{scope!r}){hint} Fix that `type` in the config, or import the module that "
            f"registers it (custom_imports).")


def registered_names(scope: str, registry: str, prefix: Optional[str] = None) -> List[str]:
    """The names that ``type=`` can take in mmengine's ``registry`` (e.g. ``'model'``).

    Args:
        scope (str): The default scope (e.g. ``'mmdet'``): its registry's names and its
            parents' are found unprefixed, its children's with their scope (``'ms_rcnn.'``).
        registry (str): The registry's name.
        prefix (str, optional): A scope the type was written with (``'ms_rcnn'`` in
            ``'ms_rcnn.MaskIoUHead'``): that scope's own names are given with it, instead of
            the children's.

    Returns:
        list[str]: The names, as a config would write them.
    """
    import mmengine.registry.root as roots
    from mmengine.registry import Registry
    names: List[str] = []
    for root in vars(roots).values():
        if not (isinstance(root, Registry) and root.name == registry):
            continue
        scoped = scope_registry(root, prefix) if prefix else None
        if scoped is not None:
            names += [f'{prefix}.{key}' for key in scoped.module_dict]
        home = scope_registry(root, scope) or root
        current = home
        while current is not None:
            names += current.module_dict
            current = current.parent
        if not prefix:  # a child scope's names need its prefix: 'ms_rcnn.CheckedCocoDataset'
            names += [f'{child.scope}.{key}' for child in home.children.values()
                      for key in child.module_dict]
    return names


def scope_registry(registry, scope: str):
    """The registry of ``scope`` in the tree below ``registry`` (itself included), or None."""
    if registry.scope == scope:
        return registry
    for child in registry.children.values():
        found = scope_registry(child, scope)
        if found is not None:
            return found
    return None


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

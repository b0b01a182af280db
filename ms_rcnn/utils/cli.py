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
    except input_errors() as exc:
        if show_traceback:
            raise
        raise SystemExit(f'error: {exc}') from None
    except KeyError as exc:  # mmengine's registries say so for a misspelt `type=`
        hint = unregistered_type_message(exc)
        if hint is None or show_traceback:
            raise
        raise SystemExit(f'error: {hint}') from None


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
            parents' are found unprefixed.
        registry (str): The registry's name.
        prefix (str, optional): A scope the type was written with (``'ms_rcnn'`` in
            ``'ms_rcnn.MaskIoUHead'``): that scope's own names are given with it.

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
        current = scope_registry(root, scope) or root
        while current is not None:
            names += current.module_dict
            current = current.parent
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

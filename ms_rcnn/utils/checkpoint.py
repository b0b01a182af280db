"""Safe loading of mmengine checkpoints under torch's ``weights_only=True``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10 calls plain
``torch.load``. Its training checkpoints hold, besides tensors and plain Python types:

- ``HistoryBuffer`` objects (the message hub's logged scalars), which pickle by default with
  ``builtins.getattr`` references to their statistics methods. We make them pickle as
  ``HistoryBuffer(log_history, count_history, max_length)`` with plain lists instead, and
  allowlist the class: ``getattr`` is never allowed.
- numpy arrays, dtypes and scalars (e.g. the ETA in the runtime info), which we allowlist.

Nothing else is allowed. Local checkpoint files are loaded through :func:`load_local_checkpoint`,
which refuses a file holding anything else with an error naming the file, the offending types
and how to load a file the user trusts.
"""
import copyreg
import os
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _reduce_history_buffer(buffer: HistoryBuffer) -> tuple:
    """Pickle a HistoryBuffer by its constructor arguments, as plain Python lists."""
    logs, counts = buffer.data
    return HistoryBuffer, (np.asarray(logs).tolist(), np.asarray(counts).tolist(),
                           int(buffer.max_length))


def numpy_safe_globals() -> List[Any]:
    """numpy's array, dtype and scalar reconstructors (the objects pickles refer to)."""
    core = getattr(np, '_core', None) or np.core  # numpy 2 renamed numpy.core
    multiarray = core.multiarray
    found = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return found


def mmengine_safe_globals() -> List[Any]:
    """Everything besides torch's defaults that an mmengine training checkpoint holds."""
    return [HistoryBuffer] + numpy_safe_globals()


def allow_mmengine_checkpoints() -> None:
    """Make mmengine checkpoints save in allowlisted form and load with ``weights_only=True``.

    Idempotent. Registers the HistoryBuffer reducer, the allowlist, and the checked local
    loader for mmengine's checkpoint loading (used by resume, ``load_from``, testing and
    inference).
    """
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    torch.serialization.add_safe_globals(mmengine_safe_globals())
    CheckpointLoader._register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects that are not allowlisted for safe loading."""


def load_local_checkpoint(filename: str, map_location=None) -> Any:
    """Load a local checkpoint with ``weights_only=True``.

    Args:
        filename (str): Path of the file.
        map_location: As for :func:`torch.load`.

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: The file does not exist.
        UnsafeCheckpointError: The file holds types outside the allowlist; the message names
            them and how to load a trusted file.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} does not exist')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
        except Exception:  # noqa: BLE001 - a broken file: report the original error
            unsafe = []
        if not unsafe:
            raise UnsafeCheckpointError(
                f'checkpoint {filename} cannot be loaded safely: {err}') from err
        names = ', '.join(unsafe)
        raise UnsafeCheckpointError(
            f'checkpoint {filename} holds types that are not allowed for safe loading '
            f'(weights_only=True): {names}. Loading them could run arbitrary code. If you '
            f'trust this file, allowlist exactly these types before loading it, e.g. '
            f'`torch.serialization.add_safe_globals([...])` with the objects named above, or '
            f're-save only its "state_dict" from a trusted environment.') from None

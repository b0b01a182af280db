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
import re
import struct
from collections import Counter, OrderedDict
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
from torch import nn

#: How a file saved by ``torch.save`` begins: a zip archive (torch >= 1.6) or a pickle.
CHECKPOINT_MAGIC = (b'PK\x03\x04', b'\x80')


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


class NotACheckpointError(ValueError):
    """A file is not a (complete) checkpoint saved by ``torch.save``."""


class CheckpointMismatchError(ValueError):
    """A checkpoint lacks parameters of the model it is loaded into, or has other shapes."""


def missing_file_reason(path: str) -> str:
    """Why ``path`` is no file to load: ``'does not exist'`` or ``'is a directory, ...'``."""
    if os.path.isdir(path):
        return 'is a directory, not a checkpoint file'
    return 'does not exist'


def check_is_torch_file(filename: str) -> bytes:
    """Refuse a file that ``torch.save`` did not write, by its first bytes; return them."""
    with open(filename, 'rb') as f:
        head = f.read(4)
    if not head:
        raise NotACheckpointError(f'checkpoint {filename} is empty (0 bytes): a save or copy '
                                  f'that was cut short; save or copy it again')
    if not head.startswith(CHECKPOINT_MAGIC):
        raise NotACheckpointError(
            f'{filename} is not a PyTorch checkpoint (it starts with {head!r}, not with the '
            f'zip or pickle header that torch.save writes)')
    return head


def load_local_checkpoint(filename: str, map_location=None) -> Any:
    """Load a local checkpoint with ``weights_only=True``.

    Args:
        filename (str): Path of the file.
        map_location: As for :func:`torch.load`.

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: The file does not exist (or is a directory).
        NotACheckpointError: The file is not one ``torch.save`` wrote, is empty or cut short.
        UnsafeCheckpointError: The file holds types outside the allowlist; the message names
            them and how to load a trusted file.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} {missing_file_reason(filename)}')
    head = check_is_torch_file(filename)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except OSError as err:  # torch's zip reader on a short truncated file
        raise NotACheckpointError(
            f'checkpoint {filename} cannot be read ({err}); it may be truncated') from None
    except (EOFError, IndexError, struct.error) as err:  # old (pickle) format, cut short
        raise NotACheckpointError(
            f'checkpoint {filename} is truncated or damaged ({type(err).__name__}: {err}); '
            f'save or copy it again') from None
    except RuntimeError as err:
        if 'magic number' in str(err):
            raise NotACheckpointError(
                f'{filename} is not a PyTorch checkpoint (torch: {err})') from None
        if 'zip archive' not in str(err) and 'corrupted' not in str(err):
            raise
        raise NotACheckpointError(
            f'checkpoint {filename} is truncated or damaged (torch: '
            f'{str(err).split(". ")[0]}); save or copy it again') from None
    except pickle.UnpicklingError as err:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
        except Exception:  # noqa: BLE001 - a broken file: report the original error
            unsafe = []
        if not unsafe:
            # torch's message suggests weights_only=False; for a file we cannot even list the
            # contents of, that is the wrong advice, so keep only what went wrong.
            detail = re.sub(r'\s+', ' ', str(err).split('WeightsUnpickler error:')[-1]).strip()
            what = 'cannot be loaded safely' if head == CHECKPOINT_MAGIC[0] else \
                'is not a PyTorch checkpoint, or an old-format one that is damaged'
            raise UnsafeCheckpointError(f'checkpoint {filename} {what}: {detail}') from None
        names = ', '.join(unsafe)
        raise UnsafeCheckpointError(
            f'checkpoint {filename} holds types that are not allowed for safe loading '
            f'(weights_only=True): {names}. Loading them could run arbitrary code. If you '
            f'trust this file, allowlist exactly these types before loading it, e.g. '
            f'`torch.serialization.add_safe_globals([...])` with the objects named above, or '
            f're-save only its "state_dict" from a trusted environment.') from None


def _groups(keys: List[str], depth: int = 2, most: int = 4) -> str:
    """Keys summarised by the first ``depth`` parts of their module's name, with counts."""
    counts = Counter('.'.join(k.rsplit('.', 1)[0].split('.')[:depth]) for k in keys)
    parts = [f'{name}.* ({n})' for name, n in counts.most_common(most)]
    if len(counts) > most:
        parts.append(f'{len(counts) - most} more groups')
    return ', '.join(parts)


def shape_mismatches(model_state: Mapping[str, torch.Tensor],
                     checkpoint_state: Mapping[str, torch.Tensor]
                     ) -> Dict[str, Tuple[tuple, tuple]]:
    """Entries whose shapes differ between a checkpoint's state dict and a model's.

    Args:
        model_state (Mapping): The model's ``state_dict()``.
        checkpoint_state (Mapping): The checkpoint's state dict, keys without ``module.``.

    Returns:
        dict: ``{key: (checkpoint shape, model shape)}``.
    """
    return {
        k: (tuple(checkpoint_state[k].shape), tuple(model_state[k].shape))
        for k in model_state if k in checkpoint_state and hasattr(checkpoint_state[k], 'shape')
        and tuple(checkpoint_state[k].shape) != tuple(model_state[k].shape)
    }


def check_checkpoint_fits(model: nn.Module, checkpoint: Any, filename: str,
                          may_lack: Sequence[str] = ()) -> None:
    """Refuse a checkpoint that would leave parameters of ``model`` at their initial values.

    mmengine loads checkpoints non-strictly and only prints what did not match, so a Mask R-CNN
    checkpoint tested with an MS R-CNN config would score masks with a random MaskIoU head.
    This loads the checkpoint into the model with torch's non-strict ``load_state_dict``
    (leaving out entries of other shapes), so that modules which rename old keys while loading
    are judged as mmengine will load them, right after. Entries the model does not use are only
    logged (a Mask R-CNN config may evaluate an MS R-CNN checkpoint without its scoring head).

    Args:
        model (nn.Module): The model (a wrapper is unwrapped).
        checkpoint: The loaded checkpoint (a dict with ``state_dict``, or a state dict), or
            None to read ``filename``.
        filename (str): The checkpoint's file, for the messages.
        may_lack (Sequence[str]): Prefixes of keys the checkpoint may lack.

    Raises:
        CheckpointMismatchError: Parameters of the model are missing from the checkpoint, or
            have other shapes there.
    """
    if checkpoint is None:
        checkpoint = _load_checkpoint(filename, map_location='cpu')
    if is_model_wrapper(model):
        model = model.module
    source = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    state = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in source.items())
    shapes = shape_mismatches(model.state_dict(), state)
    loadable = OrderedDict((k, v) for k, v in state.items() if k not in shapes)
    loadable._metadata = getattr(source, '_metadata', OrderedDict())  # versions, for renames
    problems = []
    try:
        result = model.load_state_dict(loadable, strict=False)
    except RuntimeError as err:  # a size mismatch behind a key a module renamed
        problems.append(str(err).replace('\n', ' '))
        result = None
    missing = [] if result is None else [
        k for k in result.missing_keys  # keys of other shapes were held back: not missing
        if k not in shapes and not k.endswith('num_batches_tracked')
        and not k.startswith(tuple(may_lack))]
    if missing:
        problems.append(f'it lacks {len(missing)} of the model\'s parameters and buffers: '
                        f'{_groups(missing)}')
    if shapes:
        shown = '; '.join(f'{k}: {c} in the checkpoint, {m} in the model'
                          for k, (c, m) in list(shapes.items())[:3])
        problems.append(f'{len(shapes)} have other shapes ({shown})')
    if problems:
        raise CheckpointMismatchError(
            f'checkpoint {filename} does not fit the config\'s model: {"; ".join(problems)}. '
            f'Was it trained with another config (e.g. a model without the MaskIoU head, or '
            f'another number of classes)?')
    if result is not None and result.unexpected_keys:
        print_log(f'checkpoint {filename}: {len(result.unexpected_keys)} entries the model does '
                  f'not use are ignored: {_groups(result.unexpected_keys)}', logger='current',
                  level=30)

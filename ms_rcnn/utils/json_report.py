"""Reports written as strict JSON: no ``NaN`` tokens, never a half-written file."""
import json
import math
from typing import Any

import numpy as np

from ..engine.atomic_io import atomic_write


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None and numpy values as Python ones.

    Python's ``json`` writes NaN and infinity as the bare tokens ``NaN``/``Infinity``, which
    strict JSON readers (``jq``, JavaScript, most other languages) refuse; ``null`` is what
    they read as "no value". Tuples become lists, as ``json`` writes them anyway; numpy dict
    keys become Python ones (``json`` refuses ``np.int64`` keys).

    Args:
        value: Nested dicts, lists and tuples of numbers, strings, booleans and None, and numpy
            scalars or arrays.

    Returns:
        The same structure, ready for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(value, dict):
        return {key.item() if isinstance(key, np.generic) else key: json_safe(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, report: Any) -> None:
    """Write ``report`` to ``path`` as indented strict JSON, atomically.

    Args:
        path (str): Destination; its directory is created.
        report: What :func:`json_safe` takes.
    """
    atomic_write(path, json.dumps(json_safe(report), indent=2, allow_nan=False) + '\n')

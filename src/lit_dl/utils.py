"""Small helpers shared by the verbs and tasks."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

if TYPE_CHECKING:
    import pandas as pd


def to_plain(value: Any) -> Any:
    """OmegaConf containers (at any depth) as plain dicts and lists; tuples as lists."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def class_path(obj: Any) -> str:
    """Dotted import path of an object's class, as Hydra's ``_target_`` expects."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write a file so that readers see either the old content or the whole new one, never a part.

    ``write`` receives a temporary path beside ``path`` (same file system) and writes the file
    there; it is then renamed over ``path``, or removed if ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give the usual permissions
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(dict(data), indent=2, sort_keys=True) + "\n")


# A text cell starting with one of these is run as a formula by spreadsheets (``=HYPERLINK(...)``,
# ``@SUM(...)``, ``-2+3+cmd|...``); tab and carriage return hide such a start from the eye.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A plain number written as text (``-5``, ``+1.5e3``) is no formula: it stays as it is.
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralize_formula(value: Any) -> Any:
    """``'`` before a text that a spreadsheet would run as a formula (OWASP's advice); else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` for a CSV file: formula-like text cells and column names prefixed with ``'``.

    Only text cells change (object, string and category columns); numbers, a negative one
    included, stay numbers. Every CSV that lit_dl writes goes through here unless the user
    asks for raw cells (``csv_raw=true``).
    """
    import pandas as pd

    frame = frame.copy()
    frame.columns = [neutralize_formula(name) for name in frame.columns]
    for i in range(frame.shape[1]):
        column = frame.iloc[:, i]
        if pd.api.types.is_object_dtype(column) or isinstance(
            column.dtype, pd.StringDtype | pd.CategoricalDtype
        ):
            frame.isetitem(i, column.astype(object).map(neutralize_formula))
    return frame


def write_csv(frame: pd.DataFrame, path: str | Path, *, raw: bool = False) -> None:
    """Write ``frame`` as CSV atomically, formula-like text cells neutralised unless ``raw``."""
    atomic_write_text(path, (frame if raw else neutralize_formulas(frame)).to_csv(index=False))


def format_number(value: float, spec: str = ".4f") -> str:
    """``format(value, spec)`` with zero never signed: ``-0.00004`` gives ``0.0000``, not ``-0.0000``."""
    text = format(value, spec)
    if text.startswith("-") and any(c.isdigit() for c in text) and not any(c in "123456789" for c in text):
        return text[1:]
    return text


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def prep_threads() -> int:
    """Threads that prepare a table's columns (or row ranges) at once: the process's CPU cores, at
    most 8. numpy, pandas and Arrow release the GIL in their loops over large arrays."""
    return max(1, min(8, cpu_count()))

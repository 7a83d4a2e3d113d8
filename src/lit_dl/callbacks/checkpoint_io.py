"""Checkpoints written whole or not at all.

Lightning's ``TorchCheckpointIO`` writes through fsspec, whose local "transaction" stages the file
in the temporary folder (``$TMPDIR``) and then moves it: across file systems that move is a copy,
and a process killed during it leaves a truncated ``last.ckpt`` in place of the good one.
:class:`AtomicCheckpointIO` writes the checkpoint to a temporary file in the checkpoint's own
folder, flushes and fsyncs it, and renames it over the old one (``os.replace``, atomic on one file
system): the previous ``last.ckpt`` stays until the new one is whole. A write that is cut off
leaves ``.<name>.<random>.partial``, which :func:`remove_partial_files` clears when the run resumes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (remote URLs: Lightning's own way).

    The train verb hands it to the Trainer (``plugins=[...]``) from the config's ``checkpoint_io``.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                self.write(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give the usual permissions
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)  # the rename itself survives a power cut

    def write(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        """Serialise ``checkpoint`` into the open temporary ``file``."""
        torch.save(checkpoint, file)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder
    finally:
        os.close(fd)


def remove_partial_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files of checkpoint writes that were cut off; return them."""
    found = [p for p in Path(folder).glob(f".*{PARTIAL_SUFFIX}") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found

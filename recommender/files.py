"""File copies done by the kernel, for the stages that write a version from the previous one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np


def copy_range(source: int, target: int, length: int, read_at: int, write_at: int,
               path: Path) -> None:
    """Copy `length` bytes of file descriptor `source` from offset read_at to `target` at
    write_at, in the kernel (copy_file_range: nothing passes through this process). path:
    the target's, for the error."""
    while length:
        done = os.copy_file_range(source, target, length, read_at, write_at)
        if done <= 0:
            raise OSError(errno.EIO, "copy_file_range copied nothing", str(path))
        length, read_at, write_at = length - done, read_at + done, write_at + done


def runs(from_rows: np.ndarray, to_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of a row mapping (row from_rows[i] goes to row to_rows[i]) where both row
    numbers go up by one: (first from-row, first to-row, length) of each, in order. What a
    copy in the kernel takes in one call."""
    from_rows = np.asarray(from_rows, dtype=np.int64)
    to_rows = np.asarray(to_rows, dtype=np.int64)
    breaks = np.flatnonzero((np.diff(from_rows) != 1) | (np.diff(to_rows) != 1)) + 1
    starts = np.r_[0, breaks].astype(np.int64) if len(from_rows) else breaks
    lengths = np.diff(np.r_[starts, len(from_rows)]).astype(np.int64)
    return from_rows[starts], to_rows[starts], lengths

"""File copies done by the kernel, for the stages that write a version from the previous one."""

from __future__ import annotations

import errno
import os
from pathlib import Path


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

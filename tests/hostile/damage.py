"""The kinds of hostile input, as small functions that damage a file or write a bad one."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

#: A folder name a shell would run: what a path from the config may look like.
INJECTION = "my data $(touch INJECTED) `touch INJECTED` it's"


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (9e8 px) over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))  # fmt: skip


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file short, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def injected(folder: Path) -> list[Path]:
    """Files a shell would have created from :data:`INJECTION` under ``folder``."""
    return [p for p in folder.rglob("INJECTED*") if p.name.startswith("INJECTED")]

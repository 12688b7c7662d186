"""The one image decoder every track reads pictures with (frames, views, shard samples, val
sets, masks): a few raster formats only, a pixel limit checked from the header before a byte
is decoded, and every failure one :class:`BadImage` naming the file.

PIL alone would open any of its ~40 formats (EPS hands the file to Ghostscript), stop a
decompression bomb with an exception no reader catches, and let a truncated JPEG pass
``Image.open``. The limit is the config's ``max_image_pixels``, set once per process by the
stage's ``--max-pixels`` (:func:`set_max_pixels`); a caller may pass its own.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from workflow.common.errors import BadSample, first_line

#: What the datasets of the tracks hold; anything else is refused undecoded.
FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "PPM")

_max_pixels: int | None = None


class BadImage(BadSample):
    """An image that cannot be used: ``reason`` is ``missing``, ``decompression_bomb`` or
    ``undecodable`` (the FLIP filter counts its drops by these)."""

    def __init__(self, path: str | os.PathLike[str], problem: str, reason: str) -> None:
        super().__init__(path, problem)
        self.reason = reason


def set_max_pixels(limit: int | None) -> None:
    """The process's pixel limit (a stage sets it from ``--max-pixels``); None: PIL's own."""
    global _max_pixels
    _max_pixels = None if limit is None else int(limit)


def max_pixels() -> int:
    return _max_pixels if _max_pixels is not None else int(Image.MAX_IMAGE_PIXELS or 0)


@contextmanager
def _opened(source: str | os.PathLike[str] | bytes, where: str, limit: int | None):
    """``Image.open`` of a file or bytes, header only, under the pixel limit."""
    limit = max_pixels() if limit is None else int(limit)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise BadImage(where, "image not found", "missing")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    previous = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = limit  # PIL refuses at twice this; between, the check below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp, formats=FORMATS)
    except Image.DecompressionBombError as err:
        raise BadImage(where, f"decompression bomb: {err}", "decompression_bomb") from None
    except Exception as err:  # PIL raises many types for a bad header
        raise BadImage(where, f"not a readable image: {first_line(err)}", "undecodable") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    with image:
        w, h = image.size
        if w * h > limit:
            raise BadImage(
                where, f"decompression bomb: {w}x{h} px > max_pixels {limit}", "decompression_bomb"
            )
        yield image


def image_size(
    source: str | os.PathLike[str] | bytes, where: str | None = None, limit: int | None = None
) -> tuple[int, int]:
    """(width, height) from the header alone, checked against the pixel limit."""
    with _opened(source, where or _name(source), limit) as image:
        return image.size


def decode_image(
    source: str | os.PathLike[str] | bytes,
    where: str | None = None,
    mode: str | None = "RGB",
    limit: int | None = None,
) -> Image.Image:
    """The whole image decoded (a truncated file fails here, not in a later resize), in
    ``mode`` (None: as stored); ``where`` names it in errors (e.g. ``shard.tar:key.jpg``)."""
    where = where or _name(source)
    with _opened(source, where, limit) as image:
        try:
            image.load()
            return image.convert(mode) if mode and image.mode != mode else image.copy()
        except Exception as err:  # truncated data, broken Huffman tables, ...
            raise BadImage(
                where, f"not a readable image: {first_line(err)}", "undecodable"
            ) from None


def _name(source: str | os.PathLike[str] | bytes) -> str:
    return "<image bytes>" if isinstance(source, bytes) else str(source)


@contextmanager
def max_pixels_set(limit: int | None) -> Iterator[None]:
    """:func:`set_max_pixels` for a block (tests; a library call with a limit of its own)."""
    previous = _max_pixels
    set_max_pixels(limit)
    try:
        yield
    finally:
        set_max_pixels(previous)

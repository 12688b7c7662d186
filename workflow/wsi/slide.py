"""Open a whole-slide image with OpenSlide and resolve magnifications to levels.

Magnification is always derived from the slide's resolution (``openslide.mpp-x``, else
``openslide.objective-power``, or an explicit override), never from a level index: level 1 is
x20 on one scanner and x10 on another. Every failure (missing file, not a slide, truncated
TIFF, unknown resolution, unreadable tile) becomes an ``InputError(path, problem)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from types import TracebackType

import numpy as np
import openslide
import tifffile

from workflow.common.errors import InputError

log = logging.getLogger("lsai.wsi.slide")

# Microscope convention: x10 == 1.0 um/px, x20 == 0.5, x40 == 0.25 (mpp = 10 / magnification).
MPP_TIMES_MAGNIFICATION = 10.0
# A level up to 1% coarser than needed still counts as "fine enough" (scanners round sizes).
LEVEL_TOLERANCE = 0.01
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def magnification_mpp(magnification: float) -> float:
    """Microns per pixel of a nominal magnification (x20 -> 0.5)."""
    if not magnification > 0:
        raise ValueError(f"magnification must be positive, got {magnification!r}")
    return MPP_TIMES_MAGNIFICATION / float(magnification)


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _own_mpp(
    properties: Mapping[str, str], path: str | PathLike[str], warn: bool
) -> tuple[float, str] | None:
    """What the slide says of its resolution: (mpp, ``mpp-x`` or ``objective-power``)."""
    raw = properties.get(openslide.PROPERTY_NAME_MPP_X)
    if raw is not None:
        mpp = _positive(raw)
        if mpp is not None:
            mpp_y = _positive(properties.get(openslide.PROPERTY_NAME_MPP_Y))
            if warn and mpp_y is not None and abs(mpp_y - mpp) > 0.05 * mpp:
                log.warning("%s: anisotropic pixels (mpp-x %g, mpp-y %g)", path, mpp, mpp_y)
            return mpp, "mpp-x"
        if warn:
            log.warning("%s: ignoring invalid openslide.mpp-x %r", path, raw)
    power = _positive(properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
    if power is not None:
        return MPP_TIMES_MAGNIFICATION / power, "objective-power"
    return None


def resolve_mpp(
    properties: Mapping[str, str],
    path: str | PathLike[str] = "<slide>",
    override: float | None = None,
) -> tuple[float, str]:
    """(microns per level-0 pixel, where it came from): override, ``mpp-x``, objective power.

    An override equal to what the slide says itself (the tile stage passes back the segment
    stage's resolution for every slide) is the slide's own: its source stays ``mpp-x`` or
    ``objective-power``, and only a value the slide does not give is an ``override``.
    """
    if override is not None:
        mpp = _positive(override)
        if mpp is None:
            raise InputError(path, f"mpp override must be a positive number, got {override!r}")
        own = _own_mpp(properties, path, warn=False)
        if own is not None and math.isclose(own[0], mpp, rel_tol=1e-9):
            return own
        return mpp, "override"
    own = _own_mpp(properties, path, warn=True)
    if own is None:
        raise InputError(
            path,
            "slide has no resolution (neither openslide.mpp-x nor openslide.objective-power); "
            "give its microns per pixel explicitly (mpp)",
        )
    return own


@dataclass(frozen=True)
class ScaleRead:
    """How to produce one ``patch_size`` output patch at ``magnification``.

    Read ``read_size`` px at ``level`` from a level-0 (x, y) and resize to ``patch_size``; the
    patch covers ``footprint`` = ``patch_size * downsample`` level-0 px.
    """

    magnification: float
    level: int
    downsample: float  # level-0 px per output px
    read_size: int  # px read at `level`
    patch_size: int
    footprint: int  # level-0 px covered by one patch

    @property
    def name(self) -> str:
        return f"x{self.magnification:g}"


def best_level(level_downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest level whose downsample does not exceed ``downsample``.

    Reading it and shrinking loses nothing; any coarser level would have to be upsampled.
    Same rule as OpenSlide's ``get_best_level_for_downsample``, with a 1% tolerance.
    """
    limit = downsample * (1 + LEVEL_TOLERANCE)
    fine_enough = [i for i, d in enumerate(level_downsamples) if d <= limit]
    if not fine_enough:
        return int(np.argmin(level_downsamples))
    return max(fine_enough, key=lambda i: level_downsamples[i])


def scale_read(
    level_downsamples: Sequence[float],
    mpp: float,
    magnification: float,
    patch_size: int = 256,
    *,
    footprint: int | None = None,
    path: str | PathLike[str] = "<slide>",
) -> ScaleRead:
    """Level, level-0 px per output px and read size for ``magnification`` on this slide."""
    needed = magnification_mpp(magnification) / mpp
    if needed < 1 - LEVEL_TOLERANCE:
        raise InputError(
            path,
            f"x{magnification:g} needs {magnification_mpp(magnification):g} um/px but the "
            f"slide's finest level has {mpp:g} um/px",
        )
    if footprint is None:
        footprint = max(1, round(patch_size * needed))
    downsample = footprint / patch_size
    level = best_level(level_downsamples, downsample)
    read_size = max(1, round(footprint / level_downsamples[level]))
    return ScaleRead(float(magnification), level, downsample, read_size, patch_size, footprint)


def plan_scales(
    level_downsamples: Sequence[float],
    mpp: float,
    magnifications: Sequence[float],
    patch_size: int = 256,
    *,
    path: str | PathLike[str] = "<slide>",
) -> list[ScaleRead]:
    """Scales coarse to fine whose footprints nest exactly (coarse = fine x integer ratio).

    Rounding each magnification's footprint on its own (e.g. 0.2527 um/px) would leave a
    parent and its children a pixel apart; deriving all from the finest keeps them aligned.
    """
    mags = sorted({float(m) for m in magnifications})
    if not mags:
        raise ValueError("at least one magnification is needed")
    finest = mags[-1]
    ratios = [finest / m for m in mags]
    if any(abs(r - round(r)) > 1e-9 for r in ratios):
        raise ValueError(f"magnifications {mags} must each divide the finest one ({finest:g})")
    fine = scale_read(level_downsamples, mpp, finest, patch_size, path=path)
    return [
        scale_read(
            level_downsamples, mpp, m, patch_size, footprint=fine.footprint * round(r), path=path
        )
        for m, r in zip(mags, ratios, strict=True)
    ]


def _tiff_problem(path: Path) -> str | None:
    """Why a TIFF is damaged (tile data past the end of the file, unreadable IFDs), or None."""
    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            for i, page in enumerate(tif.pages):
                offsets = np.asarray(page.dataoffsets, dtype=np.int64)
                counts = np.asarray(page.databytecounts, dtype=np.int64)
                if offsets.size and int((offsets + counts).max()) > size:
                    end = int((offsets + counts).max())
                    return f"truncated TIFF: page {i} needs {end} bytes, the file has {size}"
    except Exception as err:  # tifffile raises many types on damaged files
        return f"damaged TIFF ({type(err).__name__}: {err})"
    return None


class Slide:
    """An open slide with a resolved resolution; reads never raise anything but InputError."""

    def __init__(self, path: Path, osr: openslide.OpenSlide, mpp: float, mpp_source: str):
        self.path = path
        self.osr = osr
        self.mpp = mpp
        self.mpp_source = mpp_source

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.osr.dimensions

    @property
    def level_count(self) -> int:
        return self.osr.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self.osr.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self.osr.level_downsamples

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]

    def scale(self, magnification: float, patch_size: int = 256) -> ScaleRead:
        return scale_read(
            self.level_downsamples, self.mpp, magnification, patch_size, path=self.path
        )

    def scales(self, magnifications: Sequence[float], patch_size: int = 256) -> list[ScaleRead]:
        return plan_scales(
            self.level_downsamples, self.mpp, magnifications, patch_size, path=self.path
        )

    def read_rgb(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """(H, W, 3) uint8; transparent pixels (outside the scan) come back white."""
        try:
            region = self.osr.read_region(location, level, size)
        except openslide.OpenSlideError as err:
            raise InputError(
                self.path, f"unreadable tile at {location} level {level} (truncated?): {err}"
            ) from None
        rgba = np.asarray(region)
        alpha = rgba[..., 3:4]
        if alpha.min() == 255:  # PIL's conversion copies a third faster than numpy's
            return np.asarray(region.convert("RGB"))
        a = alpha.astype(np.float32) / 255.0
        return (rgba[..., :3] * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)

    def close(self) -> None:
        self.osr.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_slide(path: str | PathLike[str], mpp: float | None = None, probe: bool = True) -> Slide:
    """Open ``path`` and resolve its resolution; ``mpp`` overrides the slide's own.

    ``probe`` reads one tile of the finest and of the coarsest level, so that a damaged
    file fails here, with its name, rather than in a worker halfway through a stage.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "slide not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    with path.open("rb") as fh:
        is_tiff = fh.read(4) in TIFF_MAGIC
    try:
        osr = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as err:
        problem = _tiff_problem(path) if is_tiff else None
        if problem is None:
            kind = "a TIFF" if is_tiff else "a file"
            problem = f"not a whole-slide image OpenSlide can read ({kind}; {err})"
        raise InputError(path, problem) from None
    except OSError as err:
        raise InputError(path, f"cannot read the slide: {err}") from None
    if is_tiff:
        problem = _tiff_problem(path)
        if problem is not None and problem.startswith("truncated"):
            osr.close()
            raise InputError(path, problem)
    try:
        value, source = resolve_mpp(osr.properties, path, mpp)
    except InputError:
        osr.close()
        raise
    slide = Slide(path, osr, value, source)
    if probe:
        try:
            for level in {0, slide.level_count - 1}:
                w, h = slide.level_dimensions[level]
                slide.read_rgb((0, 0), level, (min(w, 256), min(h, 256)))
        except InputError:
            slide.close()
            raise
    log.debug("%s: %d levels, %g um/px (%s)", path, slide.level_count, value, source)
    return slide

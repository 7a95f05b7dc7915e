"""Resize policies for the cache: what size each image is stored at, and how it is resampled.

A policy is one of three kinds, written as a short string that is also stored in the cache:

- ``none``: keep every image at its original (EXIF-oriented) size. Images of different sizes are
  zero-padded into one array (see `iqa_cli.data.cache`).
- ``WxH`` (e.g. ``244x244``, ``512x384``): every image is resized to exactly W wide and H high, with no
  regard to aspect ratio. This is what the VT-IQA / IEIT / AL-IQA caches do (square 224/244/768).
  A bare number ``S`` means ``SxS``.
- ``short:S``: scale so the shorter side is S pixels and keep the aspect ratio (the longer side is
  rounded to the nearest pixel).

Resampling: Pillow's bicubic filter (a = -0.5), which Pillow antialiases when downscaling (the filter
support widens with the scale factor), so fine texture does not alias. The method authors resized with
OpenCV's ``INTER_CUBIC``, which does not antialias; the two agree closely for mild scale factors and
ours is the better-behaved choice for large ones (SPAQ's 4000 px photographs).

JPEGs that shrink use decode-time DCT reduction (``Image.draft``, libjpeg's scaled IDCT) first,
asking for no less than `DRAFT_GAP` times the final size; the bicubic pass then finishes the resize
(KonIQ's 1024x768 -> 512x384 needs none: the 1/2 IDCT gives it exactly). On a 1024x768 photograph
at JPEG quality 90 the result is within 0.66 grey levels on average (45.8 dB PSNR) of a full decode
plus bicubic resize, at a third of the decoding time (benchmarks/bench_prepare.py); `DRAFT_GAP = 2`
(Pillow's `thumbnail` default) was exact on that photograph but 3x slower, since a 2x gap never
reduces an exact halving.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iqa_cli.errors import ConfigError

# Decode-time JPEG reduction stops at >= DRAFT_GAP x the final size in each dimension.
DRAFT_GAP = 1.0
# What caches record in their `resample` attribute.
RESAMPLE_NOTE = (
    f"bicubic (Pillow, antialiased); JPEG draft (DCT-scaled decode) to the smallest scale >= {DRAFT_GAP:g}x "
    "the final size"
)

_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*$")
_SHORT = re.compile(r"^\s*short\s*[:=]\s*(\d+)\s*$", re.IGNORECASE)
_MAX_SIDE = 65535


@dataclass(frozen=True)
class ResizePolicy:
    """How to size every image of a cache. Build one with `parse_policy` or `policy_from_options`."""

    kind: str  # 'none' | 'fixed' | 'short'
    width: int = 0  # for 'fixed'
    height: int = 0  # for 'fixed'
    short: int = 0  # for 'short'

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.width}x{self.height}"
        if self.kind == "short":
            return f"short:{self.short}"
        return "none"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The stored (width, height) of an image whose (oriented) size is (width, height)."""
        if self.kind == "fixed":
            return self.width, self.height
        if self.kind == "short":
            short, long_ = min(width, height), max(width, height)
            new_long = max(1, int(long_ * self.short / short + 0.5))
            return (self.short, new_long) if width <= height else (new_long, self.short)
        return width, height

    def file_size(self, width: int, height: int) -> tuple[int, int]:
        """The size an image file scored by a model trained on a cache of this policy is given (`iqa
        predict`): `output_size`, except that a fixed size of another aspect ratio than the image's scales
        it to the fixed size's shorter side (aspect kept) instead of squashing it, which the model's
        training images need not have been (KonIQ's are all 4:3, a phone photo is 3:4)."""
        if self.kind == "fixed" and abs(width * self.height - height * self.width) > 0.01 * width * self.height:
            return ResizePolicy("short", short=min(self.width, self.height)).output_size(width, height)
        return self.output_size(width, height)


NONE = ResizePolicy("none")


def _checked_side(value: int, text: str) -> int:
    if not 1 <= value <= _MAX_SIDE:
        raise ConfigError(f"invalid size {text!r}: each side must be between 1 and {_MAX_SIDE} pixels")
    return value


def parse_policy(text: str) -> ResizePolicy:
    """'none' | 'WxH' | 'S' (= SxS) | 'short:S' -> ResizePolicy; a one-line ConfigError otherwise."""
    cleaned = str(text).strip()
    if cleaned.lower() in ("none", "original", "keep"):
        return NONE
    match = _SHORT.match(cleaned)
    if match:
        return ResizePolicy("short", short=_checked_side(int(match.group(1)), text))
    match = _SIZE.match(cleaned)
    if match:
        width = _checked_side(int(match.group(1)), text)
        height = _checked_side(int(match.group(2) or match.group(1)), text)
        return ResizePolicy("fixed", width=width, height=height)
    raise ConfigError(f"invalid size {text!r} (expected WxH such as 244x244, none, or short:S)")


def policy_from_options(size: str | None, short_side: int | None, default: str) -> ResizePolicy:
    """The policy from the CLI options `--size` / `--short-side`, falling back to the dataset default."""
    if size is not None and short_side is not None:
        raise ConfigError("--size and --short-side are mutually exclusive; give one of them")
    if short_side is not None:
        return ResizePolicy("short", short=_checked_side(int(short_side), str(short_side)))
    if size is not None:
        return parse_policy(size)
    return parse_policy(default)


def as_policy(value: str | ResizePolicy | None, default: str = "none") -> ResizePolicy:
    """Accept a policy, its string form, or None (the default)."""
    if isinstance(value, ResizePolicy):
        return value
    return parse_policy(default if value is None else value)

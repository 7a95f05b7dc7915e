"""The 30 synthetic distortion types of VIPNet's DPM pretraining, and the DPM's 150 class ids.

Types 1-25 are KADID-10k's, generated with the KADIS-700k toolbox semantics; 26-29 come from
VIPNet's `additional_distortion_generator.m` / `ChromaticAberrations.m`; 30 (lossy compression) has
no released generation code and is defined here (WebP; see `iqa_cli.distort.compression`).

DPM class of (type t, level l), both 1-based: (t - 1) * 5 + (l - 1), i.e. 0..149.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iqa_cli.distort import blur, chromatic, color, compression, noise, spatial, tone
from iqa_cli.distort.base import NUM_LEVELS, DistortionFn
from iqa_cli.distort.names import type_and_level
from iqa_cli.errors import ConfigError


@dataclass(frozen=True)
class DistortionType:
    id: int  # 1..30, the VIPNet / KADID-10k numbering
    slug: str  # stable machine name
    name: str  # human name
    family: str  # blur, color, compression, noise, brightness, spatial, sharpness
    fn: DistortionFn
    parameter: str  # what the level parameter means
    source: str  # where the definition comes from
    substitute: str = ""  # what differs from the original generator, if anything

    @property
    def levels(self) -> tuple[Any, ...]:
        return self.fn.levels


_KADIS = "KADIS-700k toolbox"
_VIPNET = "VIPNet additional_distortion_generator.m"

# fmt: off
_TABLE = [
    # id, slug, name, family, function,
    #     what the level parameter is, where the definition comes from[, what differs from it]
    DistortionType(1, "gaussian_blur", "Gaussian blur", "blur", blur.gaussian_blur,
                   "sigma (px)", f"{_KADIS} imblurgauss"),
    DistortionType(2, "lens_blur", "Lens blur", "blur", blur.lens_blur,
                   "disk radius (px)", f"{_KADIS} imblurlens"),
    DistortionType(3, "motion_blur", "Motion blur", "blur", blur.motion_blur,
                   "length (px), random angle", f"{_KADIS} imblurmotion"),
    DistortionType(4, "color_diffusion", "Color diffusion", "color", color.color_diffusion,
                   "a*b* blur sigma 1.5*amount+2, scaled by amount", f"{_KADIS} imcolordiffuse"),
    DistortionType(5, "color_shift", "Color shift", "color", color.color_shift,
                   "G-channel shift (px)", f"{_KADIS} imcolorshift"),
    DistortionType(6, "color_quantization", "Color quantization", "color", color.color_quantization,
                   "palette size", f"{_KADIS} imcolorquantize",
                   "median-cut palette (Pillow) instead of MATLAB's minimum-variance palette"),
    DistortionType(7, "color_saturation_1", "Color saturation 1 (HSV)", "color", color.color_saturation_hsv,
                   "HSV saturation factor", f"{_KADIS} imcolorsaturate"),
    DistortionType(8, "color_saturation_2", "Color saturation 2 (Lab)", "color", color.color_saturation_lab,
                   "a*b* factor", f"{_KADIS} imsaturate"),
    DistortionType(9, "jpeg2000", "JPEG2000", "compression", compression.jpeg2000,
                   "compression ratio", f"{_KADIS} imcompressjp2k",
                   "OpenJPEG (Pillow) instead of MATLAB's JPEG 2000 writer"),
    DistortionType(10, "jpeg", "JPEG", "compression", compression.jpeg,
                   "IJG quality", f"{_KADIS} imcompressjpeg",
                   "libjpeg via Pillow, 4:2:0 chroma subsampling"),
    DistortionType(11, "white_noise", "White noise", "noise", noise.white_noise,
                   "variance", f"{_KADIS} imnoisegauss"),
    DistortionType(12, "white_noise_color", "White noise in color component", "noise", noise.white_noise_color,
                   "variance (Y'CbCr)", f"{_KADIS} imnoisecolorcomp"),
    DistortionType(13, "impulse_noise", "Impulse noise", "noise", noise.impulse_noise,
                   "salt & pepper density", f"{_KADIS} imnoiseimpulse"),
    DistortionType(14, "multiplicative_noise", "Multiplicative noise", "noise", noise.multiplicative_noise,
                   "speckle variance", f"{_KADIS} imnoisemultiplicative"),
    DistortionType(15, "denoise", "Denoise", "noise", noise.denoise,
                   "variance of the noise removed", f"{_KADIS} imdenoise",
                   "sliding-window DCT thresholding instead of MATLAB's proprietary DnCNN"),
    DistortionType(16, "brighten", "Brighten", "brightness", tone.brighten,
                   "tone-curve amount", f"{_KADIS} imbrighten"),
    DistortionType(17, "darken", "Darken", "brightness", tone.darken,
                   "tone-curve amount", f"{_KADIS} imdarken"),
    DistortionType(18, "mean_shift", "Mean shift", "brightness", tone.mean_shift,
                   "offset (clipped)", f"{_KADIS} immeanshift"),
    DistortionType(19, "jitter", "Jitter", "spatial", spatial.jitter,
                   "per-pixel displacement sigma (px)", f"{_KADIS} imjitter"),
    DistortionType(20, "non_eccentricity_patch", "Non-eccentricity patch", "spatial", spatial.non_eccentricity_patch,
                   "number of displaced 16x16 patches", f"{_KADIS} imnoneccentricity"),
    DistortionType(21, "pixelate", "Pixelate", "spatial", spatial.pixelate,
                   "strength (scale 0.95-s^0.6)", f"{_KADIS} impixelate"),
    DistortionType(22, "quantization", "Quantization", "spatial", spatial.quantization,
                   "number of Otsu thresholds", f"{_KADIS} imnoisequantize",
                   "multi-level Otsu by Lloyd iterations on the histogram (MATLAB multithresh's search differs)"),
    DistortionType(23, "color_block", "Color block", "spatial", spatial.color_block,
                   "number of random 32x32 patches", f"{_KADIS} imcolorblock"),
    DistortionType(24, "high_sharpen", "High sharpen", "sharpness", blur.high_sharpen,
                   "unsharp-mask amount (radius 3)", f"{_KADIS} imsharpenHi"),
    DistortionType(25, "contrast_change", "Contrast change", "sharpness", tone.contrast_change,
                   "spline tone-curve amount", f"{_KADIS} imcontrastc"),
    DistortionType(26, "pink_noise", "Pink noise", "noise", noise.pink_noise,
                   "weight of 1/f noise", f"{_VIPNET} case 26"),
    DistortionType(27, "chromatic_aberration", "Chromatic aberration", "color", chromatic.chromatic_aberration,
                   "target PSNR (dB)", "VIPNet ChromaticAberrations.m",
                   "round(i/2) for the non-integer G shift; images without all 5 levels are skipped"),
    DistortionType(28, "over_exposure", "Over-exposure", "brightness", tone.over_exposure,
                   "L", f"{_VIPNET} case 28 (simulate_ou)"),
    DistortionType(29, "under_exposure", "Under-exposure", "brightness", tone.under_exposure,
                   "L", f"{_VIPNET} case 29 (simulate_ou)"),
    DistortionType(30, "lossy_compression", "Lossy compression", "compression", compression.lossy_compression,
                   "WebP quality", "iqa (VIPNet released no generator for type 30)",
                   "WebP chosen by iqa; the original codec is unknown"),
]
# fmt: on

TYPES: dict[int, DistortionType] = {t.id: t for t in _TABLE}

NUM_TYPES = len(TYPES)
NUM_CLASSES = NUM_TYPES * NUM_LEVELS


def get_type(type_id: int) -> DistortionType:
    try:
        return TYPES[int(type_id)]
    except (KeyError, ValueError):
        raise ConfigError(f"unknown distortion type {type_id!r} (expected 1..{NUM_TYPES})") from None


def class_id(type_id: int, level: int) -> int:
    """DPM class of (type, level): (type - 1) * 5 + (level - 1)."""
    if not (1 <= type_id <= NUM_TYPES and 1 <= level <= NUM_LEVELS):
        raise ConfigError(f"no DPM class for type {type_id}, level {level}")
    return (type_id - 1) * NUM_LEVELS + (level - 1)


def type_level(class_index: int) -> tuple[int, int]:
    """Inverse of `class_id`: class 0..149 -> (type 1..30, level 1..5)."""
    if not 0 <= class_index < NUM_CLASSES:
        raise ConfigError(f"DPM class {class_index} out of range 0..{NUM_CLASSES - 1}")
    return class_index // NUM_LEVELS + 1, class_index % NUM_LEVELS + 1


def class_from_name(name: str) -> int:
    """DPM class of a file named '<reference>_<TT>_<LL>.<ext>' (VIPNet's generated names and KADID-10k's
    'I01_01_01.png'), the way VIPNet's DPM reads its labels; a ConfigError for any other name."""
    parsed = type_and_level(name)
    if parsed is None:
        raise ConfigError(f"cannot read a distortion type and level from the name {name!r} (expected ..._TT_LL.ext)")
    return class_id(*parsed)


def parse_selection(text: str | None, upper: int, what: str) -> list[int]:
    """'1,2,5-9' -> [1, 2, 5, 6, 7, 8, 9]; None or 'all' -> 1..upper. Raises ConfigError on bad input."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(range(1, upper + 1))
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                lo, hi = int(lo_text), int(hi_text)
            else:
                lo = hi = int(part)
        except ValueError:
            raise ConfigError(f"--{what}: cannot read '{part}' (expected numbers and ranges like 1,2,5-9)") from None
        if lo > hi or lo < 1 or hi > upper:
            raise ConfigError(f"--{what}: '{part}' is outside 1..{upper}")
        chosen.update(range(lo, hi + 1))
    return sorted(chosen)

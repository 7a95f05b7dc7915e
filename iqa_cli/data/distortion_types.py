"""The distortion type of each image of the synthetic datasets, read from its name in the cache.

Names are the paths the parsers store (relative to the dataset root), so the official layouts decide:

* KADID-10k `images/I01_07_03.png`: type 07 of 25 (the KADID-10k list, as `iqa prepare distorted`
  numbers its first 25 types);
* TID2013 `distorted_images/i01_07_3.bmp`: type 07 of 24 (TID2013's list);
* LIVE release 2 `jp2k/img12.bmp`: the folder (jp2k, jpeg, wn, gblur, fastfading);
* CSIQ `dst_imgs/awgn/1600.AWGN.1.png`: the folder (awgn, jpeg, jpeg2000, fnoise, blur, contrast).

Used for per-type results (`iqa eval --by-type`), as VIPNet's authors report for TID2013 and KADID-10k.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

TID2013_TYPES = (
    "Additive Gaussian noise",
    "Additive noise in color components",
    "Spatially correlated noise",
    "Masked noise",
    "High frequency noise",
    "Impulse noise",
    "Quantization noise",
    "Gaussian blur",
    "Image denoising",
    "JPEG compression",
    "JPEG2000 compression",
    "JPEG transmission errors",
    "JPEG2000 transmission errors",
    "Non eccentricity pattern noise",
    "Local block-wise distortions",
    "Mean shift",
    "Contrast change",
    "Change of color saturation",
    "Multiplicative Gaussian noise",
    "Comfort noise",
    "Lossy compression of noisy images",
    "Color quantization with dither",
    "Chromatic aberrations",
    "Sparse sampling and reconstruction",
)
_CODED = re.compile(r"^[A-Za-z]\d+_(\d+)_\d+\.[A-Za-z0-9]+$")  # I01_07_03.png, i01_07_3.bmp


def _coded_type(name: str, labels: Sequence[str]) -> str | None:
    match = _CODED.match(PurePosixPath(name).name)
    if match is None:
        return None
    number = int(match.group(1))
    return f"{number:02d} {labels[number - 1]}" if 1 <= number <= len(labels) else None


def _folder_type(name: str, parent_of: str | None) -> str | None:
    parts = PurePosixPath(name).parts
    if parent_of is not None:
        lowered = [p.lower() for p in parts]
        if parent_of not in lowered or lowered.index(parent_of) + 2 >= len(parts):
            return None
        return parts[lowered.index(parent_of) + 1].lower()
    return parts[0].lower() if len(parts) > 1 else None


def _kadid_labels() -> tuple[str, ...]:
    from iqa_cli.distort.registry import TYPES

    return tuple(TYPES[i].name for i in range(1, 26))


def distortion_types(dataset: str, names: Sequence[str]) -> list[str | None] | None:
    """One type label per image name (None where a name does not say), or None for datasets whose
    names carry no types (the authentic-distortion datasets)."""
    from iqa_cli.data.datasets import get_dataset
    from iqa_cli.errors import ConfigError

    try:
        canonical = get_dataset(dataset).name
    except ConfigError:
        canonical = dataset.lower()
    if canonical == "kadid10k":
        labels = _kadid_labels()
        return [_coded_type(n, labels) for n in names]
    if canonical == "tid2013":
        return [_coded_type(n, TID2013_TYPES) for n in names]
    if canonical == "live":
        return [_folder_type(n, None) for n in names]
    if canonical == "csiq":
        return [_folder_type(n, "dst_imgs") for n in names]
    return None

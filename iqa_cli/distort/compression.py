"""Compression types: 9 JPEG2000, 10 JPEG (KADID-10k) and 30 lossy compression (VIPNet, WebP here).

All three encode in memory with Pillow and decode the result again; nothing touches the disk.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, features

from iqa_cli.distort.base import kadis_type, uint8_type
from iqa_cli.distort.ops import im2uint8


def _roundtrip(image: np.ndarray, fmt: str, **options: Any) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def encode_jpeg2000(image: np.ndarray, ratio: float) -> bytes:
    """JPEG 2000 code stream at `ratio`:1 (MATLAB `imwrite(..., 'jp2', 'CompressionRatio', ratio)`).

    MATLAB's lossy mode is the irreversible 9/7 wavelet with the colour transform; OpenJPEG's
    'rates' quality mode is the same compression-ratio target (uncompressed size / coded size).
    """
    if not features.check("jpg_2000"):
        raise RuntimeError("this Pillow build has no JPEG 2000 (OpenJPEG) support, needed by distortion type 9")
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], irreversible=True, mct=1
    )
    return buffer.getvalue()


@kadis_type(levels=(16, 32, 45, 120, 400))
def jpeg2000(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """`imcompressjp2k`: JPEG 2000 at compression ratio `ratio`:1, decoded again."""
    data = encode_jpeg2000(im2uint8(x), ratio)
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0


@kadis_type(levels=(43, 36, 24, 7, 4))
def jpeg(x: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """`imcompressjpeg`: baseline JPEG at IJG quality `quality` (Pillow/libjpeg, 4:2:0 chroma), decoded."""
    return _roundtrip(im2uint8(x), "JPEG", quality=int(quality)).astype(np.float64) / 255.0


# Type 30 has no generation code in VIPNet (its images are only downloadable), so the codec is our
# choice: WebP (lossy, VP8 intra coding), the common lossy web codec that is neither JPEG (type 10)
# nor JPEG 2000 (type 9); its artefacts (4x4 transform blocking under an in-loop deblocking
# filter, smeared texture, banding in smooth areas) differ from both. Levels: WebP cannot get as
# bad as JPEG's levels 4-5 (quality 7 and 4) even at quality 0, so the five qualities spread over
# its useful low-quality range in roughly even PSNR steps. Mean PSNR at 512x384 over seven
# scikit-image colour samples: q30 32.8 dB, q16 31.5, q8 30.5, q3 ~29.5, q0 27.5 (JPEG levels 1-5:
# 31.4, 31.0, 29.8, 25.7, 23.2). `method` is pinned so that the encoding is reproducible.
WEBP_METHOD = 4


@uint8_type(levels=(30, 16, 8, 3, 0))
def lossy_compression(image: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """Type 30, lossy compression: WebP (lossy) at `quality`, decoded again."""
    if not features.check("webp"):
        raise RuntimeError("this Pillow build has no WebP support, needed by distortion type 30")
    return _roundtrip(image, "WEBP", quality=int(quality), method=WEBP_METHOD, lossless=False)

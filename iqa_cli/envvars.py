"""The `IQA_*` environment variables that hold a number or a switch, read strictly.

A value that does not parse is an error naming the variable, never a silent default: `IQA_OFFLINE=maybe`
meant "online", `IQA_MAX_PIXELS=-5` a limit of one pixel, and `IQA_MAX_CHECKPOINT_BYTES=abc` was a raw
`ValueError`. `check_environment` reads them all once, so every command fails before its work; this
module imports nothing heavy, since the CLI calls it on every start.
"""

from __future__ import annotations

import math
import os

from iqa_cli.errors import ConfigError

OFFLINE_ENV = "IQA_OFFLINE"
MAX_PIXELS_ENV = "IQA_MAX_PIXELS"
MAX_DOWNLOAD_BYTES_ENV = "IQA_MAX_DOWNLOAD_BYTES"
MAX_CHECKPOINT_BYTES_ENV = "IQA_MAX_CHECKPOINT_BYTES"

# Largest image decoded (pixels): a deliberate decompression-bomb guard (a 140 KB PNG can claim 12000 x
# 12000 pixels, 430 MB decoded). `IQA_MAX_PIXELS` raises it for genuinely larger photographs.
DEFAULT_MAX_PIXELS = 100_000_000
# Largest download when the registry does not know the file's size (the biggest known backbone is under
# 1 GB): a mirror streaming without end cannot fill the disk.
DEFAULT_MAX_DOWNLOAD_BYTES = 4 * 2**30
# Largest unpacked PyTorch archive: the largest network here (CLIP ViT-B/16 + prompts) is under 1 GB.
DEFAULT_MAX_CHECKPOINT_BYTES = 8 * 2**30

TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """A switch: 1/true/yes/on or 0/false/no/off (empty or unset: off)."""
    text = os.environ.get(name, "").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(f"{name}={os.environ[name]!r}: expected 1/true/yes/on or 0/false/no/off")


def env_positive(name: str, default: int, unit: str) -> int:
    """A positive whole number of `unit` (`1e8` and `2.5e9` are accepted), or `default` when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a number of {unit}") from None
    if not math.isfinite(value) or value < 1:
        raise ConfigError(f"{name}={text!r}: expected a positive number of {unit}")
    return int(value)


def offline() -> bool:
    return env_flag(OFFLINE_ENV)


def max_pixels() -> int:
    return env_positive(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "pixels")


def max_download_bytes() -> int:
    return env_positive(MAX_DOWNLOAD_BYTES_ENV, DEFAULT_MAX_DOWNLOAD_BYTES, "bytes")


def max_checkpoint_bytes() -> int:
    return env_positive(MAX_CHECKPOINT_BYTES_ENV, DEFAULT_MAX_CHECKPOINT_BYTES, "bytes")


def check_environment() -> None:
    """Read every strict `IQA_*` variable once (and the home and runs folders): a bad value is an error
    before any work."""
    from iqa_cli.home import home, runs_dir

    home()  # IQA_HOME or IQA_RUNS naming a file
    runs_dir()
    offline()
    max_pixels()
    max_download_bytes()
    max_checkpoint_bytes()

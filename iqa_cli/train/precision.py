"""Numerical precision of training and evaluation: `--amp`/`--eval-amp` to an autocast context."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

TF32 = "tf32"  # a precision that is not an autocast dtype: float32 tensors, TF32 matrix products (CUDA)
Precision = torch.dtype | str | None  # an autocast dtype, TF32, or None (float32)


def amp_dtype(mode: str, device: torch.device, *, evaluation: bool = False) -> Precision:
    """The precision of `--amp`/`--eval-amp` on `device`. `auto`: bf16 autocast for GPU training, TF32
    for GPU evaluation (float32 outputs: bf16 outputs fall on 1/64 steps near a score of 3, so
    rankings tie), float32 on the CPU. `tf32` means float32 on the CPU."""
    if mode == "auto":
        mode = ("tf32" if evaluation else "bf16") if device.type == "cuda" else "off"
    if mode == "tf32":
        return TF32 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def precision_name(dtype: Precision) -> str:
    """How a result was computed, for reports: float32, tf32, bf16 or fp16."""
    if dtype is None:
        return "float32"
    if isinstance(dtype, str):
        return dtype
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))


def half_precision_ties(pred: Any, dtype: Precision, *, made: str, noun: str, outcome: str) -> str | None:
    """A note when half-precision outputs tied: bf16/fp16 outputs fall on coarse steps (1/64 near a score
    of 3 in bf16). `made` names what gave them ('evaluation'), `noun` what they are ('predictions'),
    `outcome` what the ties do."""
    name = precision_name(dtype)
    if name not in ("bf16", "fp16"):
        return None
    values = np.asarray(pred)
    distinct = int(np.unique(values).size)
    if distinct == values.size:
        return None
    return f"{name} {made} gave {distinct} distinct {noun} for {values.size} images: {outcome}"


def low_precision_ties(pred: Any, dtype: Precision) -> str | None:
    """A half-precision evaluation's ties: rank metrics (SRCC, KRCC) move with them."""
    outcome = "tied ranks change SRCC and KRCC"
    return half_precision_ties(pred, dtype, made="evaluation", noun="predictions", outcome=outcome)


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def autocast(device: torch.device, dtype: Precision) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    if isinstance(dtype, str):  # TF32
        return _tf32()
    return torch.autocast(device_type=device.type, dtype=dtype)

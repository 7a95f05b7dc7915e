"""Building a network whose every weight is about to be loaded, without drawing its random init.

A full-size network spends most of its construction time filling weights with random numbers (DeiT-S:
0.14 s of 0.17 s on one core) that a checkpoint then overwrites. `random_fills_skipped` replaces the
random fills with NaN for the calling thread only (a torch function mode is thread-local): one plain
pass instead of a random draw, and a weight that no load overwrites stays NaN, so the non-finite check
after loading refuses it instead of scoring with made-up weights. It is only safe when the load covers
every tensor the network keeps: `unsaved_buffers` names those it does not (non-persistent buffers,
which may come from the random generator), and the caller builds such a network normally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

# In-place random fills, as tensor methods and as `nn.init` functions (these dispatch on their own
# before calling the methods, so both levels are listed): each returns the tensor it was given, NaN.
_FILLS: frozenset[Callable[..., Any]] = frozenset(
    {
        torch.Tensor.uniform_,
        torch.Tensor.normal_,
        torch.Tensor.random_,
        torch.Tensor.bernoulli_,
        torch.Tensor.exponential_,
        torch.Tensor.cauchy_,
        torch.Tensor.log_normal_,
        torch.Tensor.geometric_,
        nn.init.uniform_,
        nn.init.normal_,
        nn.init.trunc_normal_,
        nn.init.kaiming_uniform_,
        nn.init.kaiming_normal_,
        nn.init.xavier_uniform_,
        nn.init.xavier_normal_,
        nn.init.orthogonal_,
        nn.init.sparse_,
    }
)
_MAKERS: frozenset[Callable[..., Any]] = frozenset({torch.rand, torch.randn})  # new random tensors


class _NoRandomFills(TorchFunctionMode):
    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _FILLS:
            return _nan(args[0] if args else kwargs["tensor"])
        if func in _MAKERS:
            kwargs.pop("generator", None)
            return _nan(torch.empty(*args, **kwargs))
        return func(*args, **kwargs)


def _nan(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_floating_point() or tensor.is_complex():
        with torch.no_grad():
            tensor.fill_(float("nan"))
    return tensor


@contextmanager
def random_fills_skipped() -> Iterator[None]:
    """Random weight fills (and `torch.rand`/`randn`) give NaN in this thread, drawing nothing."""
    with _NoRandomFills():
        yield


def unsaved_buffers(model: nn.Module) -> list[str]:
    """Buffers of `model` that its state dict leaves out (so no checkpoint load sets them)."""
    saved = set(model.state_dict())
    return [name for name, _ in model.named_buffers() if name not in saved]

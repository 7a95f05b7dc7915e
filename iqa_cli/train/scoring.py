"""Scores of dataset images with a recipe's test-time protocol (evaluation, watched datasets, AL-IQA's pool)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from iqa_cli.progress import NullProgress, Progress
from iqa_cli.stop import raise_if_stopped
from iqa_cli.train.distributed import DistContext, contiguous_share
from iqa_cli.train.precision import Precision, autocast
from iqa_cli.train.recipes.base import BaseParams, Views
from iqa_cli.train.views import ViewStore


class TestTimeProtocol(Protocol):
    """What scoring needs of a recipe (a `Recipe` is one; AL-IQA's `Outputs` scores other outputs)."""

    def eval_needs_grad(self, params: Any) -> bool: ...

    def eval_inputs(self, views: Views, params: Any) -> tuple[torch.Tensor, ...]: ...

    def predict_batch(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], params: Any) -> torch.Tensor: ...


def predict_scores(
    recipe: TestTimeProtocol,
    params: BaseParams,
    model: nn.Module,
    store: ViewStore,
    indices: np.ndarray,
    *,
    device: torch.device,
    dtype: Precision,
    dist: DistContext | None = None,
    progress: Progress | None = None,
    channels_last: bool = False,
) -> np.ndarray:
    """Scores (float64, training label scale) of `indices` in order, with the test-time protocol.

    Under DDP each rank predicts a contiguous share and the shares are gathered on every rank.
    """
    dist = dist or DistContext()
    progress = progress or NullProgress()
    mine = contiguous_share(np.asarray(indices), dist.rank, dist.world)
    batches = [mine[i : i + params.eval_batch_size] for i in range(0, mine.size, params.eval_batch_size)]
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    grad = torch.enable_grad() if recipe.eval_needs_grad(params) else torch.inference_mode()
    with store.batches(batches) as it, grad:
        for _, views in it:
            inputs = recipe.eval_inputs(views, params)
            if channels_last:
                inputs = tuple(x.contiguous(memory_format=torch.channels_last) for x in inputs)
            with autocast(device, dtype):
                pred = recipe.predict_batch(model, inputs, params)
            outputs.append(pred.detach().float())  # stays on the device: one copy to the host at the end
            progress.advance(len(pred))
            raise_if_stopped()  # a signal's exception lost in a library must not let the evaluation go on
    model.train(was_training)
    local = torch.cat(outputs).cpu().numpy().astype(np.float64) if outputs else np.empty(0, np.float64)
    return np.concatenate(dist.gather(local))

"""No training step and no test-time input of a recipe reads a device tensor back to the host.

On a GPU every such read (`.item()`, `.cpu()`, `.tolist()`, `float(t)`, `if t:` ...) waits for all
queued work, so one per step idles the GPU. Checked on the CPU by running the step with the model,
views and targets on PyTorch's `meta` device, whose tensors have no values: any read raises. Values
drawn on the host (seeded crop offsets) stay host tensors, as they would on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.base import TrainBatch
from iqa_cli.train.trainer import resolve_config
from tests.train.fakes import MemoryDataset


def _dataset(method: str) -> MemoryDataset:
    dataset = MemoryDataset(8, height=120, width=128)
    if method == "vipnet-dpm":  # distortion classes come from KADID-style names <ref>_<type>_<level>
        dataset.names = [f"I{i // 4 + 1:02d}_{i % 4 + 1:02d}_{i % 5 + 1:02d}.png" for i in range(8)]
    return dataset


@pytest.mark.parametrize("method", ["vtiqa", "ssliqa", "vipnet", "vipnet-dpm", "aliqa"])
def test_a_training_step_and_test_inputs_read_no_device_value(method):
    recipe = get_recipe(method)
    params = resolve_config(recipe, tiny=True, config_file=None, overrides={}).params
    dataset = _dataset(method)
    params = recipe.dataset_params(params, dataset)
    torch.manual_seed(0)
    model = recipe.build_model(params, tiny=True, pretrained=False).to("meta")
    images = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in dataset.images[:4]]
    views = {k: v.to("meta") for k, v in recipe.stored_views(images, params).items()}
    labels, _ = recipe.labels(dataset, params, "memory")
    target = torch.as_tensor(np.asarray(recipe.train_targets(dataset, labels, params), np.float32)[:4])
    batch = TrainBatch(views=views, target=target.to("meta"), size=4, seed=7, epoch=0, index=0)
    model.train()
    loss = recipe.training_loss(model, batch, params)  # raises if anything reads a value
    loss.backward()
    assert loss.device.type == "meta"
    model.eval()
    with torch.inference_mode():
        scores = recipe.predict_batch(model, recipe.eval_inputs(views, params), params)
    assert scores.shape == (4,)


def test_a_read_of_a_meta_tensor_raises():  # what the test above relies on
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.ones(2, device="meta").sum().item()
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.ones(2, device="meta").cpu()

"""`vipnet`: stored views (canvas, sizes, small and large images), crops and joint flips, the YCbCr view
modes, deterministic test crops, patch averaging, labels, freezing and BatchNorm modes, and the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from iqa_cli.models.vipnet import rgb_to_ycbcr
from iqa_cli.train.data import SplitParts
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.vipnet import decode_sizes, encode_sizes, fitted_size
from iqa_cli.train.trainer import resolve_config
from iqa_cli.train.views import to_image_list
from tests.train.fakes import MemoryDataset
from tests.train.threads import one_thread

recipe = get_recipe("vipnet")
YCBCR_MEAN = torch.tensor([0.448, 0.483, 0.491]).view(3, 1, 1)
YCBCR_STD = torch.tensor([0.248, 0.114, 0.106]).view(3, 1, 1)
RGB_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
RGB_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def params(tiny: bool = True, **overrides):
    return resolve_config(recipe, tiny=tiny, config_file=None, overrides=overrides).params


def to_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x * std + mean).mul(255).round().to(torch.uint8)


def images(*sizes: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    """Random uint8 images that never hold 0, so any padding in a crop shows up."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def test_sizes_are_kept_fitted_to_canvas_and_crop():
    assert fitted_size(384, 512, (768, 768), (288, 384)) == (384, 512)  # KADID/TID/KonIQ-512: native
    assert fitted_size(768, 1024, (768, 768), (288, 384)) == (576, 768)  # KonIQ 1024x768: downscaled
    assert fitted_size(500, 500, (768, 768), (288, 384)) == (500, 500)  # LIVEC: native
    assert fitted_size(200, 300, (768, 768), (288, 384)) == (288, 432)  # too small: upscaled to fit the crop
    assert fitted_size(100, 4000, (768, 768), (288, 384)) == (288, 768)  # extreme aspect: clamped
    h, w = decode_sizes(encode_sizes(torch.tensor([384, 1000]), torch.tensor([512, 65535])))
    assert h.tolist() == [384, 1000] and w.tolist() == [512, 65535]


def test_stored_views_put_each_image_on_the_canvas():
    p = params()  # crop 64x96, canvas 96x128
    small, native, large = images((40, 60), (80, 100), (200, 256))
    views = recipe.stored_views([small, native, large], p)
    assert views["rgb"].shape == (3, 3, 96, 128) and set(views) == {"rgb", "size"}
    heights, widths = decode_sizes(views["size"])
    assert heights.tolist() == [64, 80, 96] and widths.tolist() == [96, 100, 123]
    assert torch.equal(views["rgb"][1, :, :80, :100], native)  # no resampling when it fits
    assert (views["rgb"][1, :, 80:] == 0).all() and (views["rgb"][1, :, :, 100:] == 0).all()
    resize = recipe.view_shapes(params(dpm_view="resize"))
    assert resize == {"rgb": (3, 96, 128), "size": (4,), "ycbcr_whole": (3, 64, 96)}


def test_training_crops_stay_inside_each_image_and_views_match():
    p = params()
    views = recipe.stored_views(images((64, 96), (80, 100), (96, 128), (70, 120)), p)
    rgb, ycbcr = recipe.train_inputs(views, seed=3, params=p)
    assert rgb.shape == ycbcr.shape == (4, 3, 64, 96)
    crops = to_uint8(rgb, RGB_MEAN, RGB_STD)
    assert (crops > 0).all()  # no padding: every crop lies inside its image
    # The YCbCr view is the same crop (same flip) converted as PIL converts.
    assert torch.equal(to_uint8(ycbcr, YCBCR_MEAN, YCBCR_STD), rgb_to_ycbcr(crops))
    again = recipe.train_inputs(views, seed=3, params=p)[0]
    other = recipe.train_inputs(views, seed=4, params=p)[0]
    assert torch.equal(rgb, again) and not torch.equal(rgb, other)


def test_whole_image_view_is_resized_like_pil_and_flipped_with_the_crop():
    p = params(dpm_view="resize")
    (image,) = images((80, 112), seed=1)
    views = recipe.stored_views([image], p)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).convert("YCbCr").resize((96, 64), Image.Resampling.BICUBIC)
    diff = views["ycbcr_whole"][0].permute(1, 2, 0).int() - torch.from_numpy(np.array(pil)).int()
    assert diff.abs().max() <= 2
    flips = []
    for seed in range(8):
        ycbcr = to_uint8(recipe.train_inputs(views, seed, p)[1][0], YCBCR_MEAN, YCBCR_STD)
        whole = views["ycbcr_whole"][0]
        assert torch.equal(ycbcr, whole) or torch.equal(ycbcr, whole.flip(-1))
        flips.append(torch.equal(ycbcr, whole.flip(-1)))
    assert 0 < sum(flips) < 8


def test_dataset_params_pick_the_view_mode_and_shrink_the_canvas():
    data = MemoryDataset(4)  # 80x96 and 80x72 images
    for name, expected in (("kadid10k", "resize"), ("tid2013", "resize"), ("livew", "crop"), ("koniq", "crop")):
        data.attrs = {**data.attrs, "dataset": name}
        assert recipe.dataset_params(params(), data).dpm_view == expected
    resolved = recipe.dataset_params(params(dpm_view="crop"), data)
    assert resolved.dpm_view == "crop"
    assert resolved.canvas == (96, 96)  # the largest kept image (80x72 upscaled to fit the crop: 96x96)
    assert params().canvas == (96, 128)


def test_koniq_is_cropped_at_the_scale_of_the_release_the_authors_read():
    """VIPNet's loader reads KonIQ's 512x384 release; a cache of the 1024x768 release (prepare's default)
    is halved to it under the default canvas, and every other dataset keeps the 768x768 bound."""
    from types import SimpleNamespace

    full = params(tiny=False)
    koniq = SimpleNamespace(attrs={"dataset": "koniq"}, sizes=np.array([[768, 1024]] * 3))
    assert recipe.dataset_params(full, koniq).canvas == (384, 512)
    assert fitted_size(768, 1024, (384, 512), full.resolution) == (384, 512)
    half = SimpleNamespace(attrs={"dataset": "koniq"}, sizes=np.array([[384, 512]] * 3))
    assert recipe.dataset_params(full, half).canvas == (384, 512)  # the 512x384 release itself: unscaled
    other = SimpleNamespace(attrs={"dataset": "spaq"}, sizes=np.array([[768, 1024]] * 3))
    assert recipe.dataset_params(full, other).canvas == (576, 768)
    chosen = params(tiny=False, canvas=(768, 1024))  # a canvas given on purpose is kept
    assert recipe.dataset_params(chosen, koniq).canvas == (768, 1024)


def test_test_crops_are_deterministic_and_independent_of_the_batch():
    p = params(test_patch_num=5)
    a, b = images((80, 112), (96, 128), seed=2)
    both = recipe.eval_inputs(recipe.stored_views([a, b], p), p)
    alone = recipe.eval_inputs(recipe.stored_views([b], p), p)
    assert both[0].shape == (2, 5, 3, 64, 96)
    assert torch.equal(both[0][1], alone[0][0]) and torch.equal(both[1][1], alone[1][0])
    assert len({tuple(x.flatten()[:64].tolist()) for x in both[0][0]}) > 1  # the 5 crops differ
    narrow = params(test_patch_num=5, canvas="96,112")
    same = recipe.eval_inputs(recipe.stored_views([b[:, :, :112]], narrow), narrow)
    wide = recipe.eval_inputs(recipe.stored_views([b[:, :, :112]], p), p)
    assert torch.equal(same[0], wide[0])  # the crops do not depend on the canvas the image sits in
    reseeded = recipe.eval_inputs(recipe.stored_views([b], p), params(test_patch_num=5, test_seed=1))
    assert not torch.equal(reseeded[0], alone[0])


def test_predict_averages_the_crops_of_each_image():
    class Mean(torch.nn.Module):
        def forward(self, rgb, ycbcr):
            return rgb.mean(dim=(1, 2, 3)) + 0 * ycbcr.sum()

    rgb = torch.randn(3, 4, 3, 8, 8)
    scores = recipe.predict(Mean(), (rgb, rgb))
    assert scores.shape == (3,) and torch.allclose(scores, rgb.mean(dim=(2, 3, 4)).mean(dim=1))


def test_labels_are_raw_with_dmos_negated():
    data = MemoryDataset(4)
    labels, label_map = recipe.labels(data, params(), "memory")
    assert np.allclose(labels, data.scores) and label_map.description.startswith("raw")
    data.attrs = {**data.attrs, "lower_better": True}
    labels, _ = recipe.labels(data, params(), "memory")
    assert np.allclose(labels, -data.scores)
    assert np.allclose(recipe.labels(data, params(label_scale="native"), "memory")[0], data.scores)


def test_train_pool_repeats_each_image_per_patch():
    parts = SplitParts("0", np.array([3, 7]), np.array([1]), np.array([2]), "val")
    assert recipe.train_pool(parts, params(train_patch_num=3)).tolist() == [3, 3, 3, 7, 7, 7]


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_frozen_branches_and_their_batchnorm(bn_mode):
    p = params(bn_mode=bn_mode)
    model = recipe.build_model(p, tiny=True, pretrained=True)
    recipe.configure_epoch(model, 0, p)
    optimizer = recipe.make_optimizer(model, p)
    optimised = {id(q) for g in optimizer.param_groups for q in g["params"]}
    assert not any(q.requires_grad or id(q) in optimised for q in model.dpm.parameters())
    assert not any(q.requires_grad for q in model.cpm.backbone.parameters())
    assert all(q.requires_grad and id(q) in optimised for q in model.cpm.sides.parameters())
    assert all(q.requires_grad for q in model.vim.parameters())
    before = model.dpm.bn1.running_mean.clone()
    model.train()
    x = torch.randn(2, 3, 64, 96)
    with one_thread():
        model(x, x).sum().backward()
    changed = not torch.equal(before, model.dpm.bn1.running_mean)
    assert changed == (bn_mode == "train")  # the authors' code: frozen BN statistics keep drifting


def test_early_stop_is_the_authors_rule():
    """train.py: stop when epoch > best + 10, SRCC below the best and epoch > int(35 * 0.5), 1-based."""
    schedule = recipe.make_schedule(params(tiny=False))
    stopped = None
    for epoch in range(35):
        if schedule.end_epoch(epoch, improved=epoch <= 3).stop:
            stopped = epoch
            break
    assert stopped == 17  # best at epoch 3 (0-based); the authors' 1-based rule fires at epoch 18
    assert abs(recipe.make_schedule(params(tiny=False)).lr_at(2) - 5e-4 * 0.85**2) < 1e-12


def test_image_list_from_a_padded_batch_feeds_the_views():
    data = MemoryDataset(6)
    batch = torch.from_numpy(data.images[:6])
    views = recipe.stored_views(to_image_list(batch, data.sizes[:6], torch.device("cpu")), params())
    heights, widths = decode_sizes(views["size"])
    # 80x96 images fit the 64x96 crop natively; 80x72 ones are upscaled by 96/72 to fit it (107x96),
    # then clamped to the tiny 96-row canvas.
    assert set(zip(heights.tolist(), widths.tolist(), strict=True)) == {(80, 96), (96, 96)}
    assert torch.equal(views["rgb"][1, :, :80, :96], batch[1].permute(2, 0, 1)[:, :80, :96])


def test_content_backbone_start_weights_follow_the_chosen_backbone():
    from iqa_cli.train.recipes.vipnet import cpm_source

    full = recipe.Params()
    assert (full.cpm, full.multi_scale, cpm_source(full)) == ("resnet50", True, "resnet50_tv_in1k")
    assert cpm_source(params(tiny=False, cpm="resnet34")) == "resnet34_tv_in1k"
    assert cpm_source(params(tiny=False, cpm="resnet18", cpm_weights="my_r18")) == "my_r18"
    model = recipe.build_model(params(cpm="resnet18", multi_scale=False), tiny=True, pretrained=False)
    assert model.cpm.out_channels == 64 and len(model.cpm.sides) == 0  # the tiny layer-4 width


@pytest.mark.parametrize(
    ("method", "option", "bound"),
    [
        ("vipnet", "depth", 64),
        ("vipnet", "embed_dim", 8192),
        ("vipnet", "num_heads", 256),
        ("vipnet-dpm", "heads", 256),
    ],
)
def test_a_network_size_far_beyond_any_protocol_s_is_refused_before_the_work(method, option, bound):
    """`iqa train vipnet --depth 99999999999` built transformer layers until the machine's memory ran out
    (24 GiB in a minute); the sizes are now bounded like the views' (`--mosaic-source`)."""
    from iqa_cli.errors import ConfigError
    from iqa_cli.train.config import apply_values
    from iqa_cli.train.recipes import get_recipe

    params = get_recipe(method).Params()
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ConfigError, match=f"{flag}: must be at most {bound}, got 99999999999"):
        apply_values(params, {option: 99999999999}, source="options")
    assert getattr(apply_values(params, {option: bound}, source="options"), option) == bound

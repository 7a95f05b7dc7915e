"""AL-IQA recipe parts: the soft-BCE loss, what trains in rounds vs the fine-tune step, metrics, loading,
the schedule, zero-shot prompts, distance files and the k-means stand-in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.io import savemat

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.models import create, save_checkpoint
from iqa_cli.train.al.signals import (
    ZERO_SHOT_PROMPTS,
    esnthere_order,
    kmeans_distances,
    read_distance_file,
    zero_shot_probabilities,
)
from iqa_cli.train.config import apply_values
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.aliqa import head_metrics, soft_bce
from iqa_cli.train.schedule import PhasePlateau


def test_soft_bce_against_hand_computed_values():
    # One head: logits (0, 0) -> p = 0.5 and (ln 3, 0) -> p = 0.75; MOS 3 -> q = 0.5, MOS 5 -> q = 1.
    head = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([3.0, 5.0])
    one = (math.log(2.0) + -math.log(0.75)) / 2  # (-(0.5 ln .5 + 0.5 ln .5) - ln .75) / 2 = 0.490415
    assert soft_bce(head[None], target).item() == pytest.approx(one, abs=1e-6)
    assert soft_bce(torch.stack([head, head, head]), target).item() == pytest.approx(3 * one, abs=1e-6)  # 1.471244
    # MOS 1 -> q = 0: -ln(1 - p); labels beyond 1-5 are clipped to q in [0, 1].
    assert soft_bce(head[None, 1:], torch.tensor([1.0])).item() == pytest.approx(-math.log(0.25), abs=1e-6)
    assert soft_bce(head[None, 1:], torch.tensor([0.0])).item() == pytest.approx(-math.log(0.25), abs=1e-6)


def _trainable(stage: str) -> set[str]:
    recipe = get_recipe("aliqa").for_step(stage, 4)
    model = create("aliqa", tiny=True, vision_layers=6, text_layers=6)
    recipe.configure_epoch(model, 0, recipe.Params())
    optimised = {id(p) for group in recipe.make_optimizer(model, recipe.Params()).param_groups for p in group["params"]}
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert optimised == {id(p) for n, p in model.named_parameters() if n in names}
    return names


def test_rounds_train_only_the_prompts():
    assert _trainable("prompts") == {f"prompt_learner{k}.ctx" for k in range(3)}


def test_fine_tune_adds_the_last_four_blocks_and_final_norms():
    names = _trainable("fine-tune")
    assert {f"prompt_learner{k}.ctx" for k in range(3)} <= names
    for tower in ("image_encoder", "text_encoder"):
        blocks = {int(n.split(".")[3]) for n in names if n.startswith(f"{tower}.transformer.resblocks.")}
        assert blocks == {2, 3, 4, 5}  # of 6: the last four (8-11 of CLIP's 12)
    assert {"image_encoder.ln_post.weight", "image_encoder.ln_post.bias"} <= names
    assert {"text_encoder.ln_final.weight", "text_encoder.ln_final.bias"} <= names
    frozen = ("image_encoder.proj", "text_encoder.text_projection", "logit_scale", "image_encoder.conv1.weight")
    assert not names & set(frozen)
    assert not any("positional_embedding" in n or "ln_pre" in n or "class_embedding" in n for n in names)


def test_head_metrics_score_head_2_and_select_on_all_heads():
    labels = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    heads = np.stack([np.linspace(0.1, 0.9, 5), np.linspace(0.9, 0.1, 5), np.array([0.1, 0.3, 0.2, 0.8, 0.9])], 1)
    metrics = head_metrics(heads, labels)
    assert metrics["heads_srcc"] == pytest.approx((1 - 1 + 0.9) / 3)
    assert metrics["heads_plcc_srcc"] == pytest.approx(metrics["heads_plcc"] + metrics["heads_srcc"])
    assert metrics["srcc"] == pytest.approx(0.9) and metrics["n"] == 5  # head 2 alone
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((1 + 4 * heads[:, 2] - labels) ** 2)))


def test_a_round_1_checkpoint_loads_with_its_own_context_length(tmp_path):
    recipe = get_recipe("aliqa")
    params = apply_values(recipe.Params(), dict(recipe.tiny_params), source="test")
    torch.manual_seed(0)
    trained = recipe.for_step("prompts", 4).build_model(params, tiny=True, pretrained=False).eval()
    path = save_checkpoint(trained, tmp_path / "round1.safetensors", {"method": "aliqa"})
    model = recipe.build_model(params, tiny=True, pretrained=False).eval()
    assert model.prompt_learner0.ctx.shape[0] == 8
    recipe.load_weights(model, {"model": path}, params)
    assert model.prompt_learner0.ctx.shape[0] == 4
    image = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(recipe.predict(model, (image,)), recipe.predict(trained, (image,)))


def test_schedule_does_not_reset_the_count_at_the_last_phase():
    recipe = get_recipe("aliqa")
    schedule = recipe.make_schedule(recipe.Params())
    vtiqa_style = PhasePlateau(
        ((0, 0.001), (11, 0.003), (21, 0.01)), patience=5, after_epoch=10, factor=0.3, min_lr=5e-5
    )
    for epoch in range(21):
        improved = True if epoch == 4 else (False if epoch % 5 == 4 else None)
        schedule.end_epoch(epoch, improved)
        vtiqa_style.end_epoch(epoch, improved)
    assert schedule.lr() == vtiqa_style.lr() == 0.01
    assert schedule.count == 3 and vtiqa_style.count == 1  # evaluations 9, 14, 19 without improvement


def test_zero_shot_prompts_give_pairs_x_templates_probabilities():
    assert [pair for pair, _ in ZERO_SHOT_PROMPTS][-1] == ("high quality", "low quality")
    model = create("aliqa", tiny=True).eval()
    with torch.inference_mode():
        features = model.encode_image(torch.randn(4, 3, 32, 32)).numpy()
    probabilities = zero_shot_probabilities(model, features)
    assert probabilities.shape == (6, 3, 4)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_distance_files_in_dataset_or_esnthere_order(tmp_path):
    rng = np.random.default_rng(0)
    distance = rng.random((5, 3, 7))
    np.save(tmp_path / "d.npy", distance)
    np.testing.assert_array_equal(
        read_distance_file(tmp_path / "d.npy", key="distance", n_images=7, order="dataset"), distance
    )
    np.savez(tmp_path / "d.npz", other=distance)
    np.testing.assert_array_equal(
        read_distance_file(tmp_path / "d.npz", key="distance", n_images=7, order="dataset"), distance
    )
    savemat(tmp_path / "ds.mat", {"distance": distance})
    authors = read_distance_file(tmp_path / "ds.mat", key="distance", n_images=7, order="esnthere")
    order = esnthere_order(7)  # column c of the authors' file is dataset image order[c]
    np.testing.assert_array_equal(authors[:, :, order], distance)
    with pytest.raises(DataError, match="7 images, the dataset has 5"):
        read_distance_file(tmp_path / "d.npy", key="distance", n_images=5)
    with pytest.raises(DataError, match="no variable 'dist'"):
        read_distance_file(tmp_path / "ds.mat", key="dist", n_images=7)
    np.save(tmp_path / "flat.npy", distance[0])
    with pytest.raises(DataError, match="repeats, distilled images, images"):
        read_distance_file(tmp_path / "flat.npy", key="distance", n_images=7)
    with pytest.raises(DataError, match="not found"):
        read_distance_file(tmp_path / "none.npy", key="distance", n_images=7)
    # The order is never guessed: read the wrong way, every image gets another image's distances.
    with pytest.raises(ConfigError, match="--distances needs --distance-order: authors .* or dataset"):
        read_distance_file(tmp_path / "ds.mat", key="distance", n_images=7)


def test_a_distance_file_without_its_order_is_refused_before_training():
    """`--distances livew_ds.mat` without `--distance-order` read the authors' [X; Xtest] columns in the
    cache's order: the representativeness of every image was another image's, exit 0."""
    from iqa_cli.train.recipes import get_recipe

    recipe = get_recipe("aliqa")
    with pytest.raises(ConfigError, match="--distances needs --distance-order"):
        recipe.check_params(recipe.Params(distances="livew_ds.mat"))
    recipe.check_params(recipe.Params(distances="livew_ds.mat", distance_order="authors"))


def test_kmeans_stand_in_is_seeded_and_shaped_like_the_authors_tensor():
    features = np.random.default_rng(1).normal(size=(40, 8))
    first = kmeans_distances(features, centroids=6, repeats=5, seed=0)
    assert first.shape == (5, 6, 40) and (first >= 0).all()
    np.testing.assert_array_equal(first, kmeans_distances(features, centroids=6, repeats=5, seed=0))
    assert not np.array_equal(first, kmeans_distances(features, centroids=6, repeats=5, seed=1))
    assert kmeans_distances(features[:4], centroids=50, repeats=2).shape == (2, 4, 4)  # k <= pool size


def test_cid2013_labels_as_aliqa_s_test_scripts():
    """test_koniq_rt*.py read CID2013 as (Y+0)/25 + 1, where VT-IQA and IEIT use (Y+10)/25 + 1."""
    from iqa_cli.train.recipes import get_recipe

    aliqa, vtiqa = get_recipe("aliqa"), get_recipe("vtiqa")
    attrs = {"dataset": "cid2013", "native_range": [-10.0, 90.0]}
    y = np.array([-5.0, 0.0, 50.0])
    np.testing.assert_allclose(aliqa.label_map(attrs, aliqa.Params()).to_train(y), y / 25 + 1)
    np.testing.assert_allclose(vtiqa.label_map(attrs, vtiqa.Params()).to_train(y), (y + 10) / 25 + 1)
    livew = {"dataset": "livew", "native_range": [1.0, 100.0]}
    np.testing.assert_allclose(aliqa.label_map(livew, aliqa.Params()).to_train(y), y / 25 + 1)


@pytest.mark.parametrize(
    ("given", "option", "value", "why"),
    [
        ({"distances": "d.mat", "distance_order": "authors"}, "distill_images", 20, "k-means stand-in"),
        ({"distances": "d.mat", "distance_order": "authors"}, "distill_repeats", 3, "k-means stand-in"),
        ({}, "distance_key", "dist", "none is given"),
        ({}, "distance_order", "authors", "none is given"),
        ({"fine_tune": False}, "ft_batch_size", 8, "--no-fine-tune"),
        ({"fine_tune": False}, "ft_lr_phases", "0:0.01", "--no-fine-tune"),
    ],
)
def test_an_option_these_settings_never_read_is_refused(given, option, value, why):
    """`--distances F --distill-images 20`, `--distance-key k` without a file and `--no-fine-tune
    --ft-batch-size 8` trained exactly as without the option."""
    from iqa_cli.errors import ConfigError
    from iqa_cli.train.trainer import resolve_config

    recipe = get_recipe("aliqa")
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')} has no effect here .*{why}"):
        resolve_config(recipe, tiny=True, config_file=None, overrides={**given, option: value})
    read = {"distances": "d.mat", "distance_order": "dataset"}
    on = read if option.startswith("distance_") else {"fine_tune": True} if "ft" in option else {}
    resolve_config(recipe, tiny=True, config_file=None, overrides={**on, option: value})  # read there: accepted

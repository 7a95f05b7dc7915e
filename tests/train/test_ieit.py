"""IEIT's recipe: the parts that define the method (stage-2 freezing and gradient routing, stage-1
phases, the low-quality pairing, metrics, finding stage 1) and learning on a synthetic dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from iqa_cli.errors import ConfigError
from iqa_cli.models.checkpoint import read_state_dict
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.base import TrainBatch
from iqa_cli.train.recipes.ieit import (
    LQ_METRIC,
    STAGE_PHASES,
    low_quality_metrics,
    low_quality_partners,
    stage_params,
)
from iqa_cli.train.runs import BEST, split_dir
from iqa_cli.train.stage_runs import earlier_stage_weights
from iqa_cli.train.trainer import TrainOptions, resolve_config, train
from tests.enhance.helpers import enhanced_cache
from tests.train.threads import one_thread

recipe = get_recipe("ieit")


def params_for(**overrides):
    return stage_params(resolve_config(recipe, tiny=True, config_file=None, overrides=overrides).params)


def batch_of(n: int, extra: int, seed: int = 7) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    shape = (n + extra, 3, 72, 72)
    views = {k: torch.randint(0, 256, shape, generator=g, dtype=torch.uint8) for k in ("original", "enhanced")}
    target = 1 + 4 * torch.rand(n + extra, generator=g)
    return TrainBatch(views=views, target=target, size=n, seed=seed, epoch=0, index=0)


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {k: (None if p.grad is None else p.grad.clone()) for k, p in module.named_parameters()}


def test_stage_protocol_values_fill_what_is_left_open():
    full = resolve_config(recipe, tiny=False, config_file=None, overrides={}).params
    one = stage_params(full)
    assert (one.batch_size, one.loss, one.selection_metric, one.lr_phases) == (146, "mse", "plcc", STAGE_PHASES[1])
    two = stage_params(resolve_config(recipe, tiny=False, config_file=None, overrides={"stage": 2}).params)
    assert (two.batch_size, two.loss, two.selection_metric, two.lr_phases) == (210, "l1", LQ_METRIC, STAGE_PHASES[2])
    assert STAGE_PHASES[1] == ((0, 0.01), (21, 0.001), (41, 0.005), (61, 0.03))
    assert STAGE_PHASES[2] == ((0, 0.001), (21, 0.003), (41, 0.01))
    plateau = (full.freeze_epochs, full.patience, full.plateau_after, full.lr_factor, full.min_lr)
    assert plateau == (21, 20, 60, 0.3, 5e-5)
    assert (full.weight_decay, full.momentum, full.optimizer, full.lq_threshold) == (1e-3, 0.0, "sgd", None)
    kept = params_for(stage=2, batch_size=5, loss="mse", selection_metric="srcc")
    assert (kept.batch_size, kept.loss, kept.selection_metric) == (5, "mse", "srcc")
    with pytest.raises(ConfigError, match="needs --stage 2"):
        params_for(from_run="somewhere")


@pytest.mark.parametrize("option", ["freeze_epochs", "pretrained"])
def test_a_stage_one_option_given_for_stage_two_is_refused_not_ignored(option, tmp_path):
    """`--stage 2 --freeze-epochs 5` trained exactly as without it: stage 2 starts from the whole stage-1 model."""
    value = 5 if option == "freeze_epochs" else "none"
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')} has no effect here \\(stage 1 only"):
        params_for(stage=2, **{option: value})
    assert getattr(params_for(stage=1, **{option: value}), option) == (5 if option == "freeze_epochs" else None)
    config = tmp_path / "config.toml"  # a stage-1 run's resolved config.toml holds both: a fine start for stage 2
    config.write_text('freeze_epochs = 5\npretrained = "none"\n', encoding="utf-8")
    resolved = resolve_config(recipe, tiny=True, config_file=config, overrides={"stage": 2})
    assert resolved.params.stage == 2 and resolved.params.freeze_epochs == 5


def test_a_classifier_without_the_selection_rule_is_refused_not_ignored():
    """`--no-select-enhanced --classifier X` trained (and later predicted) exactly as without --classifier."""
    with pytest.raises(ConfigError, match="--classifier has no effect here \\(the selection rule's classifier"):
        params_for(select_enhanced=False, classifier="my_vit")
    assert params_for(select_enhanced=True, classifier="my_vit").classifier == "my_vit"
    # the same at test time: `iqa predict ieit --classifier X` of a model that selects nothing ignored it
    from iqa_cli.train.weights import apply_test_overrides

    plain = params_for(select_enhanced=False)
    with pytest.raises(ConfigError, match="--classifier has no effect here"):
        apply_test_overrides(recipe, plain, {"classifier": "my_vit"}, files=True)
    both = apply_test_overrides(recipe, plain, {"select_enhanced": True, "classifier": "my_vit"}, files=True)
    assert both.classifier == "my_vit"


def test_stage_two_freezes_encoder_one_and_routes_gradients_as_the_authors():
    torch.manual_seed(0)
    params = params_for(stage=2, dropout=0.0)
    model = recipe.build_model(params, tiny=True, pretrained=False)
    batch = batch_of(4, 4)
    recipe.configure_epoch(model, 0, params)
    assert not any(p.requires_grad for p in model.encoder1.parameters())
    assert not model.encoder2.head.weight.requires_grad
    loss = recipe.training_loss(model, batch, params)
    loss.backward()
    got = grads(model)
    assert all(v is None for k, v in got.items() if k.startswith(("encoder1.", "encoder2.head.")))
    # Encoder 2 learns only through regressor 2 on the low-quality pair.
    x_original, x_enhanced = recipe.train_inputs(batch.views, batch.seed, params)
    model.zero_grad(set_to_none=True)
    s2 = model.score_pair(x_original[4:], x_enhanced[4:])
    torch.nn.functional.l1_loss(s2.reshape(-1), batch.target[4:]).backward()
    pair_only = grads(model)
    for key, value in got.items():
        if key.startswith(("encoder2.", "regressor2.")) and value is not None:
            assert torch.allclose(value, pair_only[key], atol=1e-6), key
    assert all(pair_only[k] is None for k in got if k.startswith("regressor1."))
    # Regressor 1 trains on features computed without gradients.
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        features = torch.cat(model.features(x_original[:4], x_enhanced[:4]), dim=1)
    torch.nn.functional.l1_loss(model.regressor1(features).reshape(-1), batch.target[:4]).backward()
    frozen_features = grads(model)
    for key in (k for k in got if k.startswith("regressor1.")):
        assert got[key] is not None and torch.allclose(got[key], frozen_features[key], atol=1e-6), key
    # One optimiser step (with weight decay) leaves encoder 1 and the ImageNet heads exactly as they were.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.zero_grad(set_to_none=True)
    optimizer = recipe.make_optimizer(model, params)
    recipe.training_loss(model, batch, params).backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        unchanged = torch.equal(value, after[key])
        if key.startswith("encoder1.") or ".head." in key:
            assert unchanged, key
    assert not torch.equal(before["encoder2.cls_token"], after["encoder2.cls_token"])
    assert not torch.equal(before["regressor1.1.weight"], after["regressor1.1.weight"])


def test_stage_one_trains_both_regressors_then_everything_with_mse_plus_mse():
    torch.manual_seed(0)
    params = params_for(stage=1, dropout=0.0, freeze_epochs=2)
    model = recipe.build_model(params, tiny=True, pretrained=False)
    batch = batch_of(4, 0)
    recipe.configure_epoch(model, 1, params)
    loss = recipe.training_loss(model, batch, params)
    x_original, x_enhanced = recipe.train_inputs(batch.views, batch.seed, params)
    s1, s2 = model.forward_both(x_original, x_enhanced)
    mse = torch.nn.functional.mse_loss
    assert torch.allclose(loss, mse(s1.reshape(-1), batch.target) + mse(s2.reshape(-1), batch.target))
    loss.backward()
    got = grads(model)
    assert all(v is None for k, v in got.items() if k.startswith("encoder"))
    assert all(v is not None for k, v in got.items() if k.startswith("regressor"))
    model.zero_grad(set_to_none=True)
    recipe.configure_epoch(model, 2, params)
    recipe.training_loss(model, batch, params).backward()
    got = grads(model)
    assert all((v is None) == (".head." in k) for k, v in got.items())  # all but the ImageNet heads


def test_original_and_enhanced_views_get_the_same_crop_and_flip():
    params = params_for()
    for mode in ("batch", "image"):
        params.crop_mode = mode
        images = torch.randint(0, 256, (6, 3, 72, 72), dtype=torch.uint8)
        for seed in range(4):
            x_o, x_e = recipe.train_inputs({"original": images, "enhanced": images.clone()}, seed, params)
            assert x_o.shape == (6, 3, 64, 64) and torch.equal(x_o, x_e)


def test_low_quality_partner_is_position_mod_n_poor_of_the_training_part():
    labels = np.array([1.5, 3.0, 1.0, 4.0, 2.5, 1.9, 3.3, 1.2, 5.0, 2.0])
    train = np.array([0, 1, 3, 4, 5, 6, 8, 9])  # 2 and 7 are test images: never partners
    partners = low_quality_partners(train, labels, 2.0)
    poor = [0, 5]  # training images with y < 2, in training order
    assert partners.tolist() == [poor[i % 2] for i in range(8)]
    bound = type(recipe)()
    bound.partner_of = dict(zip(train.tolist(), partners.tolist(), strict=True))
    extra = bound.batch_extra(np.array([9, 0, 4]), parts=None, epoch=3, batch=1, seed=0, params=params_for())
    assert extra.tolist() == [poor[7 % 2], poor[0], poor[3 % 2]]
    assert recipe.batch_extra(np.array([1]), parts=None, epoch=0, batch=0, seed=0, params=params_for()) is None
    with pytest.raises(ConfigError, match="raise the bar with --lq-threshold"):  # it said "lower": the wrong way
        low_quality_partners(train, labels + 5, 2.0)


def test_metrics_add_the_low_quality_subset():
    labels = np.array([1.2, 1.5, 1.8, 3.0, 4.0, 4.5])
    pred = np.array([1.0, 1.7, 1.6, 3.5, 3.9, 4.8])
    values = recipe.metrics(pred, labels, params_for())
    assert values["lq_n"] == 3 and math.isclose(values["lq_srcc"], 0.5)
    assert math.isclose(values[LQ_METRIC], values["plcc"] + values["lq_plcc"])
    few = low_quality_metrics(pred, labels, 1.6)
    assert few["lq_n"] == 2 and math.isnan(few["lq_plcc"])
    assert math.isclose(recipe.metrics(pred, labels, params_for(lq_threshold=1.6))[LQ_METRIC], values["plcc"])


def _fake_run(root, name, *, stage, dataset="mini", tiny=True, complete=True, created="2026-01-01"):
    path = root / name
    info = {
        "method": "ieit",
        "dataset": dataset,
        "created": created,
        "config": {"tiny": tiny, "params": {"stage": stage}},
        "splits": {"random_0": {"status": "complete" if complete else "running"}},
    }
    (split_dir(path, "random_0")).mkdir(parents=True)
    (split_dir(path, "random_0") / BEST).write_bytes(b"x")
    (path / "run.json").write_text(json.dumps(info), encoding="utf-8")
    return split_dir(path, "random_0") / BEST


def test_stage_two_finds_the_newest_finished_stage_one_run_of_its_dataset_and_split(_isolated_home):
    runs = _isolated_home / "runs"
    old = _fake_run(runs, "a", stage=1, created="2026-01-01")
    _fake_run(runs, "b", stage=2, created="2026-01-03")
    _fake_run(runs, "c", stage=1, created="2026-01-04", complete=False)
    _fake_run(runs, "d", stage=1, created="2026-01-05", tiny=False)
    _fake_run(runs, "e", stage=1, created="2026-01-06", dataset="other")
    newest = _fake_run(runs, "f", stage=1, created="2026-01-02")
    find = dict(stage=1, dataset="mini", split="random_0", tiny=True, train_hint="iqa train ieit ...")
    assert earlier_stage_weights("ieit", named=None, **find) == newest
    assert earlier_stage_weights("ieit", named="a", **find) == old
    assert earlier_stage_weights("ieit", named=str(old), **find) == old  # a checkpoint file
    with pytest.raises(ConfigError, match="stage 2, not ieit stage 1"):
        earlier_stage_weights("ieit", named="b", **find)
    with pytest.raises(ConfigError, match="trained on 'other'"):
        earlier_stage_weights("ieit", named=str(runs / "e"), **find)
    with pytest.raises(ConfigError, match="no finished kept model for split random_1; finished: random_0"):
        earlier_stage_weights("ieit", named="a", **{**find, "split": "random_1"})
    # a named run whose split is still training: its best model so far is no finished stage 1
    with pytest.raises(ConfigError, match=r"split random_0 is running\); finished: none \(resume it, or name .*best"):
        earlier_stage_weights("ieit", named="c", **find)
    with pytest.raises(ConfigError, match=r"no finished ieit stage-1 --tiny run on 'nothing'.*--from RUN"):
        earlier_stage_weights("ieit", named=None, **{**find, "dataset": "nothing"})


def test_the_recipe_learns_a_synthetic_quality_ranking(tmp_path, _isolated_home):
    """Synthetic images whose quality is their noise strength (tests.train.fakes): 64 images, 48/16
    train/test, a fifth of the 48 held out for model selection. Stage 1: AdamW 5e-4 (faster than the
    protocol's SGD on a randomly initialised tiny ViT), 20 epochs; stage 2: the protocol (SGD, lr 0.001,
    L1 + L1), 3 epochs, from the stage-1 run it finds by itself. Measured (torch 2.14, CPU, one thread):
    test SRCC 0.853 after stage 1 and 0.829 after stage 2 (chance: 0 +- 0.26 on 16 images; an untrained
    network's random features already rank noise levels somewhat, so the loss must fall too); the bar
    is 0.6."""
    cache = enhanced_cache(tmp_path / "syn", _isolated_home / "data" / "syn.h5", n=64)
    common = {"batch_size": 8, "dropout": 0.0, "device": "cpu", "log_every": 1000, "val_fraction": 0.2}
    stage1 = {"optimizer": "adamw", "lr": 0.0005, "freeze_epochs": 0, "epochs": 20, "eval_every": 2}
    with one_thread():
        one = train(TrainOptions("ieit", data=cache, tiny=True, overrides={**common, **stage1}))
        two = train(TrainOptions("ieit", data=cache, tiny=True, overrides={**common, "stage": 2, "epochs": 3}))
    first, second = one["splits"][0], two["splits"][0]
    assert first["srcc"] > 0.6 and second["srcc"] > 0.6, (first, second)
    log = [json.loads(line) for line in (split_dir(Path(one["run"]), "random_0") / "log.jsonl").open()]
    losses = [r["loss"] for r in log if r["part"] == "val"]
    assert losses[-1] < 0.5 * losses[0]  # MSE + MSE falls from ~15 to ~2
    _, meta = read_state_dict(second["weights"])
    assert meta["stage1_weights"] == first["weights"]
    # and which model that path held: stage 1 trained on later (`--resume --epochs`) replaces the file
    assert meta["stage1_weights_sha256"] == read_state_dict(first["weights"])[1]["content_sha256"]
    saved = json.loads(meta["params"])
    assert (saved["stage"], saved["loss"], saved["selection_metric"], saved["optimizer"]) == (2, "l1", LQ_METRIC, "sgd")


def test_low_quality_bar_is_the_dataset_s_cid2013_2_4_as_the_authors_test_script():
    """test_example_of_cid.py: labels (Y+10)/25+1, low quality = label < 2.4; every other dataset < 2."""
    from types import SimpleNamespace

    params = params_for()
    for dataset, bar in (("cid2013", 2.4), ("cid", 2.4), ("livew", 2.0), ("koniq", 2.0), ("mine", 2.0)):
        resolved = recipe.dataset_params(params, SimpleNamespace(attrs={"dataset": dataset}))
        assert resolved.lq_threshold == bar, dataset
    chosen = recipe.dataset_params(params_for(lq_threshold=1.7), SimpleNamespace(attrs={"dataset": "cid2013"}))
    assert chosen.lq_threshold == 1.7  # an explicit --lq-threshold wins
    labels = np.array([1.5, 2.1, 2.3, 2.35, 3.0, 4.0, 2.39, 1.2])
    pred = labels + np.linspace(0, 0.1, labels.size)
    at_cid = recipe.metrics(pred, labels, recipe.dataset_params(params, SimpleNamespace(attrs={"dataset": "cid2013"})))
    assert at_cid["lq_n"] == int((labels < 2.4).sum()) == 6


def test_the_enhancement_a_model_saw_decides_the_scoring_notes():
    """An imported release trained on the authors' E; a run records how its E was made; the built-in
    enhancement of the same settings is the one image files get, so only it needs no note."""
    from iqa_cli.enhance.ops import METHOD
    from iqa_cli.train.recipes import get_recipe

    recipe = get_recipe("ieit")
    assert recipe.file_scoring_note({"enhancement": METHOD}, "w") is None
    assert recipe.file_scoring_note({}, "w") is None  # older checkpoints: not known, nothing claimed
    assert "authors: their published" in recipe.file_scoring_note({"source_sha256": "ab"}, "ieit_livew")
    assert "builtin: older" in recipe.file_scoring_note({"enhancement": "builtin: older settings"}, "w")

    class Cache:
        def __init__(self, made):
            self.enhanced = type("E", (), {"attrs": {"enhancement": made}})()

    imported = recipe.dataset_scoring_note({"source_sha256": "ab"}, Cache(METHOD), "ieit_livew")
    assert "--from-authors" in imported
    assert recipe.dataset_scoring_note({"source_sha256": "ab"}, Cache("authors: livew_244.mat"), "w") is None
    assert recipe.dataset_scoring_note({"enhancement": "external: /a"}, Cache("external: /b"), "w") is None

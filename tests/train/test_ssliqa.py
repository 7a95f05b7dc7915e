"""SSL-IQA's recipe: the parts that define the method (ramp, consistency losses, stop-gradient), the
labelled/unlabelled partition and epoch length, the 5-bin labels, the test-time protocol, and
learning on a synthetic dataset whose quality is its noise strength."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.models import create
from iqa_cli.models.ssliqa import PairOutputs, expected_score
from iqa_cli.train.data import make_parts
from iqa_cli.train.engine import SEED_STRIDE, FitContext, batch_seed
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.base import TrainBatch
from iqa_cli.train.recipes.ssliqa import (
    SemiParts,
    angle_potentials,
    as_semi,
    epoch_rows,
    gaussian_distributions,
    loss_terms,
    partition,
    prediction_consistency,
    rkd_angle_loss,
    sigmoid_rampup,
)
from iqa_cli.train.trainer import resolve_config
from tests.train.fakes import MemoryDataset

RECIPE = get_recipe("ssliqa")


def params(**overrides):
    return resolve_config(RECIPE, tiny=True, config_file=None, overrides=overrides).params


# ------------------------------------------------------------------------------------ the method's parts


def test_sigmoid_rampup_matches_the_mean_teacher_ramp():
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))  # 0.0067: the first epoch
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-1.25))  # 0.2865
    assert sigmoid_rampup(9, 10) == pytest.approx(math.exp(-0.05))  # 0.9512: the tenth epoch, never 1
    assert sigmoid_rampup(10, 10) == sigmoid_rampup(25, 10) == 1.0
    assert sigmoid_rampup(-3, 10) == pytest.approx(math.exp(-5)) and sigmoid_rampup(4, 0) == 1.0


def test_prediction_consistency_is_mse_to_the_detached_teacher():
    student = torch.tensor([[0.5, 0.5, 0.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    loss = prediction_consistency(student, teacher)
    assert loss.item() == pytest.approx((0.25 + 0.25 + 0.0) / 3)
    loss.backward()
    assert teacher.grad is None and torch.allclose(student.grad, torch.tensor([[-1 / 3, 1 / 3, 0.0]]))


def test_rkd_angle_loss_against_hand_computed_values():
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    # Anchor 1's directions to images 0 and 2 are (-1, 0) and (-1, 1)/sqrt(2): cosine 1/sqrt(2).
    angles = angle_potentials(student).reshape(3, 3, 3)
    assert angles[1, 0, 2].item() == pytest.approx(1 / math.sqrt(2)) and angles[0, 1, 2].item() == 0.0
    assert angles[2, 2].abs().sum() == 0  # the anchor's own direction is the zero vector
    # The same triangle at another scale (and another feature width) has the same angles.
    assert rkd_angle_loss(student, torch.tensor([[0.0, 0.0, 5.0], [2.0, 0.0, 5.0], [0.0, 2.0, 5.0]])).item() == 0.0
    # Collinear teacher 0, 1, 2 (1-D features): the 6 differing cosines give SmoothL1 sums of 2 * 0.5,
    # 2 * (1 + 1/sqrt2 - 0.5) and 2 * 0.5 (1 - 1/sqrt2)^2, i.e. 3 + 1/2, averaged over 3^3 entries.
    teacher = torch.tensor([[0.0], [1.0], [2.0]], requires_grad=True)
    loss = rkd_angle_loss(student, teacher)
    assert loss.item() == pytest.approx(3.5 / 27)
    loss.backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


def _outputs(n_l=4, n_u=6, seed=0):
    """Leaf tensors standing in for both branches' outputs, so gradients can be inspected per output."""
    g = torch.Generator().manual_seed(seed)

    def branch(n, width):
        prob = torch.softmax(torch.randn(n, 5, generator=g), 1).requires_grad_()
        return prob, torch.randn(n, width, generator=g).requires_grad_()

    out = PairOutputs(branch(n_l, 7), branch(n_l, 3), branch(n_u, 7), branch(n_u, 3))
    target = torch.softmax(torch.randn(n_l, 5, generator=g), 1)
    return out, target


@pytest.mark.parametrize("epoch", [0, 4, 9])
def test_total_loss_is_the_papers_sum(epoch):
    out, target = _outputs()
    terms = loss_terms(out, target, epoch=epoch, rampup_epochs=10, relation_weight=100.0)
    (ps, fs), (pt, ft), (pus, fus), (put, fut) = out
    mse = torch.nn.functional.mse_loss
    assert terms["student"].item() == pytest.approx(mse(ps, target).item())
    assert terms["teacher"].item() == pytest.approx(mse(pt, target).item())
    assert terms["ikd"].item() == pytest.approx((mse(pus, put) + mse(ps, pt)).item())
    assert terms["agkd"].item() == pytest.approx((rkd_angle_loss(fus, fut) + rkd_angle_loss(fs, ft)).item())
    weight = math.exp(-5 * (1 - epoch / 10) ** 2)
    expected = terms["student"] + weight * (terms["ikd"] + 100 * terms["agkd"]) + terms["teacher"]
    assert terms["total"].item() == pytest.approx(expected.item())


def test_the_teacher_gets_only_its_supervised_loss():
    out, target = _outputs()
    loss_terms(out, target, epoch=7, rampup_epochs=10, relation_weight=100.0)["total"].backward()
    (ps, fs), (pt, ft), (pus, fus), (put, fut) = out
    # Stop-gradient on every teacher output used as a target (predictions and relations) ...
    assert ft.grad is None and put.grad is None and fut.grad is None
    # ... so the teacher's labelled prediction sees exactly d MSE(pT, y) / d pT.
    assert torch.allclose(pt.grad, 2 * (pt - target).detach() / target.numel())
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (ps, fs, pus, fus))


def test_pair_training_forward_runs_both_branches_and_no_teacher_graph_on_unlabelled():
    torch.manual_seed(0)
    pair = create("ssliqa", tiny=True, network="alexnet").train()
    xl, xu = torch.randn(3, 3, 64, 64), torch.randn(5, 3, 64, 64)
    out = pair(xl, xu, mode="train")
    assert out.student_labelled[0].shape == (3, 5) and out.teacher_labelled[1].shape == (3, 512)
    assert out.student_unlabelled[1].shape == (5, 256) and out.teacher_unlabelled[0].shape == (5, 5)
    assert not out.teacher_unlabelled[0].requires_grad and out.student_unlabelled[0].requires_grad
    alone = pair(xl, xu[:0], mode="train")
    assert alone.student_unlabelled is None and alone.teacher_unlabelled is None
    pair.eval()
    with torch.inference_mode():
        assert torch.equal(pair(xl)[0], pair.student(xl)[0]) and torch.equal(
            pair(xl, mode="teacher")[0], pair.teacher(xl)[0]
        )
    with pytest.raises(ConfigError, match="unknown SSL-IQA pair mode"):
        pair(xl, mode="both")


def test_training_loss_ignores_the_unlabelled_rows_targets():
    p = params(batch_size=2)
    torch.manual_seed(0)
    model = RECIPE.build_model(p, tiny=True, pretrained=False)
    views = {"image": torch.randint(0, 256, (6, 3, 112, 104), dtype=torch.uint8)}
    target = torch.softmax(torch.randn(6, 5), 1)

    def loss(target):
        torch.manual_seed(1)
        model.load_state_dict(state)  # BatchNorm running statistics move with every training forward
        batch = TrainBatch(views=views, target=target, size=2, seed=5, epoch=3, index=0)
        return RECIPE.training_loss(model, batch, p).item()

    state = {k: v.clone() for k, v in model.state_dict().items()}
    other = target.clone()
    other[2:] = torch.softmax(torch.randn(4, 5), 1)  # the unlabelled rows carry no label the loss may use
    assert loss(target) == loss(other)
    other[0] = torch.tensor([1.0, 0, 0, 0, 0])
    assert loss(target) != loss(other)


# ------------------------------------------------------------------------------------ 5-bin labels


def test_gaussian_labels_against_hand_computed_values():
    (dist,) = gaussian_distributions(np.array([3.0]), np.array([1.0]))
    # Phi(-1.5), Phi(-0.5) - Phi(-1.5), Phi(0.5) - Phi(-0.5), ... (symmetric, so the centre stays at 3)
    assert dist == pytest.approx([0.0668072, 0.2417303, 0.3829249, 0.2417303, 0.0668072], abs=1e-6)
    means = np.array([1.0, 1.2, 2.7, 4.9, 5.0, 6.0])
    dists = gaussian_distributions(means, np.array([0.7, 0.7, 0.05, 1.5, 0.7, 0.7]))
    assert np.allclose(dists.sum(1), 1.0) and (dists >= 0).all()
    assert np.allclose(dists @ np.arange(1, 6), np.clip(means, 1, 5), atol=1e-4)  # expectation = the label
    assert dists[0, 0] > 0.999 and dists[4, 4] > 0.999


def test_targets_use_the_caches_distributions_else_derived_ones():
    data = MemoryDataset(8)
    p = params()
    derived = RECIPE.train_targets(data, np.asarray(data.scores, np.float64), p)
    assert derived.shape == (8, 5) and derived.dtype == np.float32
    assert np.allclose(derived @ np.arange(1, 6), data.scores, atol=1e-4)  # std 0 = unknown: --label-std
    assert np.allclose(derived, gaussian_distributions(data.scores, np.full(8, 0.7)), atol=1e-6)
    data.std = np.full(8, 0.4, np.float32)  # a known std (here on the 1-5 scale already) sets the spread
    with_std = RECIPE.train_targets(data, data.scores, p)
    assert np.allclose(with_std, gaussian_distributions(data.scores, np.full(8, 0.4)), atol=1e-6)
    data.distributions = np.full((8, 5), np.nan, np.float32)
    data.distributions[2] = [2, 0, 6, 2, 0]  # counts are normalised; NaN rows keep the derived label
    targets = RECIPE.train_targets(data, data.scores, p)
    assert np.allclose(targets[2], [0.2, 0, 0.6, 0.2, 0]) and np.allclose(
        np.delete(targets, 2, 0), np.delete(with_std, 2, 0)
    )
    data.attrs = {**data.attrs, "native_range": (0.0, 100.0), "dataset": "other"}  # not the native 1-5 scale
    assert not np.allclose(RECIPE.train_targets(data, data.scores, params(label_scale="range"))[2], targets[2])
    data.attrs["native_range"] = (1.0, 5.0)
    data.distributions[2] = [-1, 0, 6, 2, 0]
    with pytest.raises(DataError, match="negative or empty rating distributions"):
        RECIPE.train_targets(data, data.scores, p)


# ------------------------------------------------------------------------------------ partition


def _semi(data, **overrides):
    p = params(**overrides)
    parts = make_parts(data, "0", select_on="val", val_fraction=0.25, seed=0)
    ctx = FitContext(
        recipe=RECIPE,
        params=p,
        cfg=resolve_config(RECIPE, tiny=True, config_file=None, overrides={"val_fraction": 0.25}).engine,
        dataset=data,
        labels=data.scores,
        device=torch.device("cpu"),
        meta={},
    )
    return RECIPE.semi_parts(ctx, parts), p


def test_partition_takes_the_labelled_n_and_validation_from_the_training_side():
    data = MemoryDataset(40)
    semi, p = _semi(data, labeled=12)
    side = data.split("0")["train"]
    assert semi.labelled.size + semi.val.size == 12 and semi.val.size == 3  # 25 % of the N, not of the side
    assert set(semi.labelled) | set(semi.val) | set(semi.unlabelled) == set(side)
    assert not set(semi.labelled) & set(semi.unlabelled) and not set(semi.val) & set(semi.unlabelled)
    assert not set(semi.test) & set(side) and set(semi.train) == set(semi.labelled) | set(semi.unlabelled)
    again, _ = _semi(data, labeled=12)
    assert np.array_equal(again.labelled, semi.labelled) and np.array_equal(again.val, semi.val)
    other, _ = _semi(data, labeled=12, label_seed=1)
    assert not np.array_equal(other.labelled, semi.labelled)
    labelled, unlabelled = partition(side, 12, 0)  # the first N of the seeded permutation, before the val carve
    assert set(labelled) == set(semi.labelled) | set(semi.val) and np.array_equal(unlabelled, semi.unlabelled)
    with pytest.raises(ConfigError, match="--labeled 31 is more than the 30 training images of split '0'"):
        _semi(data, labeled=31)


def test_no_training_image_shares_a_reference_or_a_file_with_the_validation_part():
    """SSL-IQA's validation part (out of the labelled N) ignored byte-identical copies, and the unlabelled
    images, which train too, could be distortions of its references: the kept model was chosen on content
    it had trained on. Every other method's validation part keeps references and copies on one side."""
    data = MemoryDataset(40)
    data.ref_ids = np.arange(40) // 4  # 10 references of 4 images
    semi, _ = _semi(data, labeled=16)
    groups = data.ref_ids
    assert semi.val.size
    assert not set(groups[semi.val]) & (set(groups[semi.labelled]) | set(groups[semi.unlabelled]))
    plain = MemoryDataset(40)  # no references: copies only
    plain.file_digests = np.arange(40, dtype=np.uint64)
    side = plain.split("0")["train"]
    plain.file_digests[side[1:]] = plain.file_digests[side[0]]  # every training image one file
    with pytest.raises(ConfigError, match="too few to hold out a validation part"):
        _semi(plain, labeled=16)  # one group: nothing can be held out apart from it


def test_epoch_is_the_shorter_of_the_zipped_loaders():
    p = params(batch_size=16, ratio=2, patch_num=10)
    assert epoch_rows(2000, 6058, p) == 20000  # KonIQ, N = 2000: the labelled loader (1250 steps) is shorter
    assert epoch_rows(2000, 1000, p) == 1000 * 10 // 32 * 16  # few unlabelled: 312 steps of the unlabelled loader
    assert epoch_rows(2000, 0, p) == 20000 and epoch_rows(2000, 1000, params(ratio=0)) == 2000 * 2
    with pytest.raises(ConfigError, match="fill no unlabelled batch of 32"):
        epoch_rows(10, 3, p)
    semi = SemiParts("s", np.arange(20), np.empty(0, int), np.arange(20, 24), "test", np.arange(8), np.arange(8, 20))
    pool = RECIPE.train_pool(semi, params(batch_size=4, ratio=2, patch_num=2))  # 24 unlabelled rows: 3 steps
    assert pool.size == 12 and np.bincount(pool).tolist() == [2, 2, 2, 2, 1, 1, 1, 1]
    assert np.bincount(RECIPE.train_pool(semi, params(batch_size=4, ratio=1, patch_num=2))).tolist() == [2] * 8


def test_unlabelled_rows_are_a_pure_function_of_the_batch_and_distinct_across_ranks():
    semi = SemiParts("s", np.arange(60), np.empty(0, int), np.arange(60, 70), "test", np.arange(10), np.arange(10, 60))
    p = params(batch_size=4, ratio=2, patch_num=2)
    seed = batch_seed(3, 1, 0, 5)
    assert seed // SEED_STRIDE == 3

    def rows(batch, epoch=1, n=4):
        return RECIPE.batch_extra(np.arange(n), parts=semi, epoch=epoch, batch=batch, seed=seed, params=p)

    first = [rows(b) for b in range(12)]  # 12 batches x 8 rows: the epoch's 100 unlabelled rows, no repeat
    assert all(r.size == 8 and set(r) <= set(semi.unlabelled) for r in first)
    assert np.bincount(np.concatenate(first)).max() <= 2  # each image at most patch_num times
    assert np.array_equal(rows(5), first[5]) and not np.array_equal(rows(5, epoch=2), first[5])
    assert rows(3, n=2).size == 4  # a partial last batch brings ratio x its rows
    assert RECIPE.batch_extra(np.arange(4), parts=semi, epoch=1, batch=0, seed=seed, params=params(ratio=0)) is None
    plain = make_parts(MemoryDataset(40), "0", select_on="test", val_fraction=0.1, seed=0)
    assert as_semi(plain, params(labeled=10)).labelled.size == 10  # plain parts: partitioned on the fly


# ------------------------------------------------------------------------------------ test-time protocol


def test_test_crops_are_the_same_positions_for_every_image_and_averaged():
    p = params(test_crops=3, branch="student")
    images = torch.randint(0, 256, (4, 3, 112, 104), dtype=torch.uint8)
    (x,) = RECIPE.eval_inputs({"image": images}, p)
    assert x.shape == (12, 3, 96, 96)
    (alone,) = RECIPE.eval_inputs({"image": images[2:3]}, p)
    assert torch.equal(alone, x[6:9])  # image 2's crops do not depend on its batch
    torch.manual_seed(0)
    model = create("ssliqa", tiny=True).eval()
    with torch.inference_mode():
        scores = RECIPE.predict_batch(model, (x,), p)
        per_crop = expected_score(model.student(x)[0]).reshape(4, 3)
        teacher = RECIPE.predict_batch(model, (x,), params(test_crops=3, branch="teacher"))
    assert torch.allclose(scores, per_crop.mean(1)) and not torch.allclose(scores, teacher)
    assert torch.allclose(teacher, expected_score(model.teacher(x)[0]).reshape(4, 3).mean(1))


def test_bad_parameters_are_refused():
    for overrides, message in (
        ({"branch": "both"}, "branch must be one of student, teacher"),
        ({"label_scale": "native"}, "--label-scale must be one of paper, range"),
        ({"resize": "square"}, "resize must be one of faithful, fixed"),
        ({"labeled": 1}, "labeled must be at least 2"),
        ({"crop_size": 128}, "crop_size 128 is larger than the 112x104 resize"),
        ({"ratio": -1}, "--ratio: must be at least 0"),
        ({"network": "vgg"}, "network must be one of tres, alexnet, inceptionresv2, googlenet"),
        ({"network": "tres", "crop_size": 80}, "crop_size 80: the TReS teacher needs a multiple of 32"),
        ({"network": "inceptionresv2", "crop_size": 64}, "InceptionResNetV2 teacher needs at least 75"),
    ):
        with pytest.raises(ConfigError, match=message):
            params(**overrides)
    assert RECIPE.view_shapes(params()) == {"image": (3, 112, 104)}  # faithful: H x W = long x short
    assert RECIPE.view_shapes(params(resize="fixed")) == {"image": (3, 104, 112)}
    full = RECIPE.Params()
    assert full.network == "tres"  # train_kd_semi.py's parse_config() default
    assert (full.labeled, full.batch_size, full.ratio, full.patch_num, full.epochs) == (2000, 16, 2, 10, 10)
    assert (full.lr, full.lr_step, full.lr_gamma, full.relation_weight, full.test_crops) == (2e-4, 2, 0.5, 100.0, 10)
    assert RECIPE.view_shapes(full) == {"image": (3, 512, 384)} and full.crop_size == 224
    schedule = RECIPE.make_schedule(full)
    assert [schedule.lr_at(e) for e in (0, 1, 2, 3, 4, 9)] == [2e-4, 2e-4, 1e-4, 1e-4, 5e-5, 2e-4 / 16]


def test_start_weights_come_from_the_named_files_into_each_backbone(tmp_path):
    import torchvision

    torch.manual_seed(0)
    files = {}
    for arch in ("alexnet", "resnet18"):  # stand in for the ImageNet files of the weights store
        files[arch] = tmp_path / f"{arch}.pth"
        torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), files[arch])
    p = params(network="alexnet", student_pretrained=str(files["alexnet"]), teacher_pretrained=str(files["resnet18"]))
    model = RECIPE.build_model(p, tiny=True, pretrained=True)
    alexnet, resnet = (torch.load(files[a], weights_only=True) for a in ("alexnet", "resnet18"))
    assert torch.equal(model.student.base[0][0].weight, alexnet["features.0.weight"])
    assert torch.equal(model.teacher.base[0].weight, resnet["conv1.weight"])
    fresh = RECIPE.build_model(p, tiny=True, pretrained=False)  # rebuilding a trained model loads no start weights
    assert not torch.equal(fresh.student.base[0][0].weight, alexnet["features.0.weight"])


def test_baseline_trains_each_branch_alone_on_labelled_images():
    """baseline.py: one network, labelled images only, MSE to the rating distribution. Uncoupled, the
    student's gradient is its own MSE's alone (so the pair is two independent baselines)."""
    import torch

    from iqa_cli.models.ssliqa import PairOutputs
    from iqa_cli.train.recipes.ssliqa import epoch_rows, loss_terms, unlabelled_ratio

    torch.manual_seed(0)
    p_s, f_s = torch.rand(4, 5, requires_grad=True), torch.rand(4, 7, requires_grad=True)
    p_t, f_t = torch.rand(4, 5, requires_grad=True), torch.rand(4, 7, requires_grad=True)
    target = torch.softmax(torch.rand(4, 5), dim=1)
    out = PairOutputs((p_s, f_s), (p_t, f_t), None, None)
    terms = loss_terms(out, target, epoch=9, rampup_epochs=10, relation_weight=100.0, coupled=False)
    assert torch.isclose(terms["total"], terms["student"] + terms["teacher"])
    terms["total"].backward()
    expected = torch.autograd.grad(torch.nn.functional.mse_loss(p_s, target), p_s)[0]
    assert torch.allclose(p_s.grad, expected)
    assert f_s.grad is None or torch.count_nonzero(f_s.grad) == 0  # no relation term
    chosen = params(baseline=True)
    assert unlabelled_ratio(chosen) == 0 and epoch_rows(20, 500, chosen) == 20 * chosen.patch_num
    # `--baseline --ratio 3` (or the consistency terms' options) trained exactly as without them
    for option, value in (("ratio", 3), ("rampup_epochs", 5), ("relation_weight", 10.0)):
        with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')} has no effect here \\(--baseline"):
            params(baseline=True, **{option: value})
        assert getattr(params(**{option: value}), option) == value


@pytest.mark.parametrize(
    "network,student,teacher,feature_dims",
    [
        ("tres", "SSLStudent", "SSLTReS", (256, 1024)),
        ("alexnet", "SSLStudent", "SSLTeacher", (256, 512)),
        ("inceptionresv2", "SSLStudent", "SSLInceptionResNetV2", (256, 96)),
        ("googlenet", "SSLGoogLeNet", "SSLTeacher", (1024, 512)),
    ],
)
def test_every_network_pair_of_the_training_script_trains_a_step(network, student, teacher, feature_dims):
    p = params(network=network, batch_size=2)
    torch.manual_seed(0)
    model = RECIPE.build_model(p, tiny=True, pretrained=False)
    assert (type(model.student).__name__, type(model.teacher).__name__) == (student, teacher)
    RECIPE.configure_epoch(model, 0, p)
    views = {"image": torch.randint(0, 256, (6, 3, 112, 104), dtype=torch.uint8)}
    batch = TrainBatch(views=views, target=torch.softmax(torch.randn(6, 5), 1), size=2, seed=5, epoch=3, index=0)
    loss = RECIPE.training_loss(model, batch, p)
    loss.backward()
    assert torch.isfinite(loss)
    for branch in (model.student, model.teacher):  # both branches learn from the one summed loss
        assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in branch.parameters())
    # DistributedDataParallel waits for a gradient of every trainable parameter: TReS's unused ImageNet
    # classifier stopped every `--network tres` step under torchrun.
    idle = [name for name, q in model.named_parameters() if q.requires_grad and q.grad is None]
    assert idle == [], idle
    (x,) = RECIPE.eval_inputs(views, p)
    model.eval()
    with torch.inference_mode():
        scores = RECIPE.predict_batch(model, (x,), p)
        dims = tuple(int(branch(x[:2])[1].shape[1]) for branch in (model.student, model.teacher))
    assert scores.shape == (6,) and ((scores >= 1) & (scores <= 5)).all()
    assert dims == feature_dims


@pytest.mark.parametrize(
    "network,student_file,teacher_file",
    [("tres", "alexnet", "resnet18"), ("googlenet", "googlenet", "resnet18"), ("inceptionresv2", "alexnet", None)],
)
def test_imagenet_start_weights_of_each_pair_load_into_their_trunks(tmp_path, network, student_file, teacher_file):
    import torchvision

    from iqa_cli.models.inception_resnet_v2 import InceptionResNetV2

    torch.manual_seed(0)
    files = {}
    for name in {student_file, teacher_file} - {None}:  # stand in for the ImageNet files of the weights store
        extra = {"aux_logits": True, "init_weights": True} if name == "googlenet" else {}
        net = getattr(torchvision.models, name)(weights=None, **extra)
        files[name] = tmp_path / f"{name}.pth"
        torch.save(net.state_dict(), files[name])
    if teacher_file is None:  # Cadene's port: 1001 classes, the children of the trunk by name
        teacher_file = "irv2"
        files[teacher_file] = tmp_path / "irv2.pth"
        torch.save(InceptionResNetV2(width_div=16, repeats=(1, 1, 1)).state_dict(), files[teacher_file])
    p = params(
        network=network, student_pretrained=str(files[student_file]), teacher_pretrained=str(files[teacher_file])
    )
    model = RECIPE.build_model(p, tiny=True, pretrained=True)
    student, teacher = (torch.load(files[n], weights_only=True) for n in (student_file, teacher_file))
    first_student = model.student.base[0][0].weight if student_file == "alexnet" else model.student.base[0].conv.weight
    assert torch.equal(
        first_student, student["features.0.weight" if student_file == "alexnet" else "conv1.conv.weight"]
    )
    if network == "tres":  # the whole ResNet under `model.`, its classifier included, as the authors load it
        assert torch.equal(model.teacher.model.conv1.weight, teacher["conv1.weight"])
        assert torch.equal(model.teacher.model.fc.weight, teacher["fc.weight"])
    elif network == "googlenet":
        assert torch.equal(model.teacher.base[0].weight, teacher["conv1.weight"])
    else:
        assert torch.equal(model.teacher.base[14].conv.weight, teacher["conv2d_7b.conv.weight"])


def test_runs_saved_before_the_network_option_are_the_alexnet_pair():
    assert RECIPE.saved_params({"labeled": 100}) == {"network": "alexnet", "labeled": 100}
    assert RECIPE.saved_params({"network": "tres"})["network"] == "tres"


def test_the_student_variant_names_each_pair_s_student_network():
    from iqa_cli.models.ssliqa import PAIRS
    from iqa_cli.train.recipes.ssliqa import STUDENT_MODELS

    branch_models = {"alexnet": "ssliqa-student", "googlenet": "ssliqa-googlenet"}
    assert STUDENT_MODELS == {network: branch_models[student] for network, (student, _teacher) in PAIRS.items()}
    for network in PAIRS:
        assert RECIPE.model_name(params(network=network, variant="student")) == STUDENT_MODELS[network]
        assert RECIPE.model_name(params(network=network)) == "ssliqa"


def test_the_teacher_variant_names_each_pair_s_teacher_network_and_imports_map_back():
    from iqa_cli.models.ssliqa import PAIRS
    from iqa_cli.train.recipes.ssliqa import IMPORTED, TEACHER_MODELS

    branch_models = {
        "resnet101": "ssliqa-teacher",
        "tres": "ssliqa-tres",
        "inceptionresnetv2": "ssliqa-inceptionresnetv2",
    }
    assert TEACHER_MODELS == {network: branch_models[teacher] for network, (_student, teacher) in PAIRS.items()}
    for network in PAIRS:
        assert (
            RECIPE.model_name(params(network=network, variant="teacher", branch="teacher")) == TEACHER_MODELS[network]
        )
    # every imported single network comes back as the variant and pair that build it, scored with its branch
    for model, (variant, network) in IMPORTED.items():
        assert RECIPE.imported_params(model) == {"variant": variant, "network": network, "branch": variant}
        assert RECIPE.model_name(params(**RECIPE.imported_params(model))) == model
    assert RECIPE.imported_params("ssliqa") == {} and RECIPE.imported_params("vtiqa") is None
    with pytest.raises(ConfigError, match="holds the teacher only"):
        RECIPE.check_params(params(variant="teacher", branch="student"))

"""AL-IQA: fidelity to the authors' CustomCLIP, prompt learners, CLIP weights, tiny-config behaviour."""

from __future__ import annotations

import socket

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models import create, get_entry, load_checkpoint, save_checkpoint
from iqa_cli.models.aliqa import (
    ALIQA,
    QUALITY_PAIRS,
    TINY_CONFIG,
    VOCAB_SIZE,
    PromptLearner,
    clip_tokenizer,
    load_clip_weights,
    positive_probability,
    tokenize,
)
from tests.reference_fixtures import assert_matches, filled_state_dict, find, load_fixture, make_inputs


@pytest.mark.reference
def test_matches_reference():
    manifest, ref = load_fixture("aliqa")
    model = create("aliqa").eval()
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]
    # The released koniq_rt*.pt files are DataParallel saves: every name carries `module.`.
    load_checkpoint(model, {"module." + k: v for k, v in filled_state_dict(manifest).items()})
    seen: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    hooks = [
        model.image_encoder.register_forward_hook(lambda _m, _i, out: seen["image"].append(out)),
        model.text_encoder.register_forward_hook(lambda _m, _i, out: seen["text"].append(out)),
    ]
    image = make_inputs(ref)["image"]
    with torch.inference_mode():
        logits = model(image)
    for hook in hooks:
        hook.remove()
    outputs, inter = ref["outputs"], ref["intermediates"]
    for k in range(3):
        assert_matches(logits[k], find(outputs, f"logits{k}"), 1e-5, f"logits{k}")
    score = positive_probability(logits[model.score_head])
    assert_matches(score, find(outputs, "quality_score"), 1e-5, "quality score")
    assert_matches(seen["image"][0], find(inter, "image_features"), 1e-4, "image features")
    for k in range(3):
        assert_matches(seen["text"][k], find(inter, f"text_features{k}"), 1e-4, f"text features {k}")
    assert_matches(model.logit_scale.exp().detach().reshape(1), find(inter, "logit_scale.exp()"), 1e-4, "scale")


def test_prompts_tokenise_as_the_authors_did():
    _manifest, ref = load_fixture("aliqa")
    recorded = ref["meta"]["tokenized_prompts"]
    embedding = torch.zeros(VOCAB_SIZE, 4)
    for k, names in enumerate(QUALITY_PAIRS):
        learner = PromptLearner(names, embedding, n_ctx=8, context_length=77)
        want = recorded[f"tokenized_prompts{k}"]
        assert list(learner.tokenized_prompts.shape) == want["shape"]
        for row, ids in zip(learner.tokenized_prompts, want["nonzero_prefix_ids"], strict=True):
            assert row[: len(ids)].tolist() == ids and not row[len(ids) :].any()
        assert learner.tokenized_prompts.argmax(dim=-1).tolist() == want["argmax_eot_position"]
        assert learner.token_prefix.shape == (2, 1, 4) and learner.token_suffix.shape == (2, 68, 4)


def test_tokenizer_and_model_work_without_network(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    clip_tokenizer.cache_clear()  # build the tokenizer (reads the packaged BPE vocabulary) under the block
    model = create("aliqa", tiny=True).eval()
    assert tokenize(["a photo."], 77)[0, :4].tolist() == [49406, 320, 1125, 269]
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 32, 32))[0].shape == (1, 2)


def test_tiny_forward_backward_trains_only_the_prompts():
    torch.manual_seed(0)
    model = create("aliqa", tiny=True)
    trainable = model.set_trainable("prompts")
    assert trainable == ["prompt_learner0.ctx", "prompt_learner1.ctx", "prompt_learner2.ctx"]
    logits = model(torch.randn(2, 3, 32, 32))
    assert len(logits) == 3 and all(t.shape == (2, 2) for t in logits)
    # The authors' loss: soft-label BCE on p(first class), summed over the heads.
    target = torch.tensor([0.2, 0.9])
    loss = sum(-(target * t.log_softmax(-1)[:, 0] + (1 - target) * t.log_softmax(-1)[:, 1]).mean() for t in logits)
    loss.backward()
    for learner in model.prompt_learners:
        assert learner.ctx.grad.abs().sum() > 0
    assert model.image_encoder.conv1.weight.grad is None and model.text_encoder.text_projection.grad is None


def test_fine_tune_stage_unfreezes_the_last_four_blocks_and_final_norms():
    model = ALIQA(**{**TINY_CONFIG, "vision_layers": 6, "text_layers": 5})
    names = set(model.set_trainable("fine-tune"))
    assert "image_encoder.transformer.resblocks.2.attn.in_proj_weight" in names
    assert "image_encoder.transformer.resblocks.1.attn.in_proj_weight" not in names
    assert "text_encoder.transformer.resblocks.1.mlp.c_fc.weight" in names
    assert "text_encoder.transformer.resblocks.0.mlp.c_fc.weight" not in names
    assert {"image_encoder.ln_post.weight", "text_encoder.ln_final.bias", "prompt_learner2.ctx"} <= names
    frozen = {"image_encoder.proj", "text_encoder.text_projection", "logit_scale", "image_encoder.conv1.weight"}
    assert not frozen & names and "text_encoder.positional_embedding" not in names
    with pytest.raises(ConfigError, match="unknown AL-IQA training stage"):
        model.set_trainable("everything")


def test_score_is_p_high_quality_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = create("aliqa", tiny=True).eval()
    image = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        first, second = model(image), model(image)
        score = model.score(image)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(score, first[2].softmax(dim=-1)[:, 0])
    assert ((score >= 0) & (score <= 1)).all()


def test_state_dict_uses_the_authors_names_and_buffers_come_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = create("aliqa", tiny=True).eval()
    torch.manual_seed(1)
    target = create("aliqa", tiny=True).eval()
    state = source.state_dict()
    assert "token_embedding" not in state and not any(k.startswith("token_embedding") for k in state)
    assert {
        "logit_scale",
        "prompt_learner2.ctx",
        "prompt_learner2.token_prefix",
        "prompt_learner2.token_suffix",
    } <= set(state)
    assert not torch.equal(source.token_embedding, target.token_embedding)
    path = save_checkpoint(source, tmp_path / "aliqa.safetensors")
    load_checkpoint(target, path)
    # The prefix/suffix embeddings are the checkpoint's, not rebuilt from target's own token embedding.
    assert torch.equal(target.prompt_learner1.token_suffix, source.prompt_learner1.token_suffix)
    image = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(source(image), target(image), strict=True))


def test_n_ctx_4_and_wrong_context_size_is_reported():
    model = create("aliqa", tiny=True, n_ctx=4)
    assert model.prompt_learner0.ctx.shape == (4, 32)
    assert model.prompt_learner0.token_suffix.shape == (2, TINY_CONFIG["context_length"] - 1 - 4, 32)
    eight = create("aliqa", tiny=True).state_dict()
    with pytest.raises(CheckpointError, match=r"prompt_learner0\.ctx \(8, 32\) \(expected \(4, 32\)\)"):
        load_checkpoint(model, {"module." + k: v for k, v in eight.items()})


def test_prompt_learner_with_context_words_is_zero_shot_clip():
    torch.manual_seed(0)
    model = create("aliqa", tiny=True).eval()
    learner = model.make_prompt_learner(["sharp", "blurry"], ctx_init="this photo is")
    assert learner.n_ctx == 3 and learner.prompt_texts == ["this photo is sharp.", "this photo is blurry."]
    with torch.inference_mode():
        from_learner = model.encode_learner(learner)
        from_text = model.encode_texts(["this photo is sharp.", "this photo is blurry."])
    assert torch.allclose(from_learner, from_text, atol=1e-6)
    custom = model.make_prompt_learner(["obvious", "unobvious", "none"], n_ctx=5)
    assert custom.ctx.shape == (5, 32) and custom.tokenized_prompts.shape == (3, TINY_CONFIG["context_length"])


def test_bad_configurations_are_refused():
    with pytest.raises(ConfigError, match="needs 19 tokens, more than the context length 16"):
        create("aliqa", tiny=True, n_ctx=15)
    with pytest.raises(ConfigError, match="score_head 3 is not one of the 3 prompt learners"):
        create("aliqa", tiny=True, score_head=3)
    with pytest.raises(ConfigError, match="at least 2 class names"):
        create("aliqa", tiny=True, classnames=[["good"]], score_head=0)


def _tiny_open_clip() -> open_clip.model.CLIP:
    """open_clip's own CLIP in the tiny shape, with QuickGELU as OpenAI's ViT-B/16 has."""
    cfg = TINY_CONFIG
    vision = open_clip.model.CLIPVisionCfg(
        layers=cfg["vision_layers"],
        width=cfg["vision_width"],
        head_width=cfg["vision_width"] // cfg["vision_heads"],
        patch_size=cfg["patch_size"],
        image_size=cfg["image_size"],
    )
    text = open_clip.model.CLIPTextCfg(
        context_length=cfg["context_length"],
        vocab_size=VOCAB_SIZE,
        width=cfg["text_width"],
        heads=cfg["text_heads"],
        layers=cfg["text_layers"],
    )
    clip = open_clip.model.CLIP(cfg["embed_dim"], vision, text, quick_gelu=True).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(3.9)
        for param in clip.parameters():  # open_clip zero-initialises some tensors; make every one count
            param.add_(torch.randn_like(param) * 0.02)
    return clip


def test_clip_weights_load_and_match_open_clip(tmp_path):
    torch.manual_seed(0)
    clip = _tiny_open_clip()
    path = tmp_path / "open_clip_model.safetensors"  # the weights store's format for CLIP
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    model = load_clip_weights(create("aliqa", tiny=True), path).eval()
    texts = ["a photo of good quality.", "bad."]
    image = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(model.encode_image(image), clip.encode_image(image), atol=1e-5)
        tokens = open_clip.tokenizer.SimpleTokenizer(context_length=TINY_CONFIG["context_length"])(texts)
        assert torch.allclose(model.encode_texts(texts), clip.encode_text(tokens), atol=1e-5)
    assert torch.equal(model.logit_scale, clip.logit_scale)
    # The prompt buffers were rebuilt from CLIP's token embedding: [SOS] and "high quality." [EOS].
    learner = model.prompt_learner2
    assert torch.equal(learner.token_prefix[:, 0], clip.token_embedding.weight[[49406, 49406]])
    high_quality = tokenize(["high quality."], TINY_CONFIG["context_length"])[0, 1:]
    assert torch.equal(
        learner.token_suffix[0], clip.token_embedding.weight[high_quality[: learner.token_suffix.shape[1]]]
    )


def test_clip_weights_of_another_shape_are_refused():
    clip_state = _tiny_open_clip().state_dict()
    clip_state["visual.proj"] = torch.zeros(64, 16)
    del clip_state["ln_final.bias"]
    with pytest.raises(CheckpointError, match=r"image_encoder\.proj \(64, 16\).*missing tensors, first: text_encoder"):
        load_clip_weights(create("aliqa", tiny=True), clip_state)


def test_registry_entry_and_meta_build():
    manifest, _ref = load_fixture("aliqa")
    entry = get_entry("aliqa")
    assert entry.convert_original is None  # our names are the authors' names
    assert "ImageNet-normalised" in entry.inputs
    with torch.device("meta"):  # `iqa models` counts parameters on the meta device
        model = create("aliqa")
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters_elements"]


def test_open_clip_is_imported_only_when_al_iqa_is_built():
    import subprocess
    import sys

    code = (
        "import sys, iqa_cli.models, iqa_cli.cli.main; assert 'open_clip' not in sys.modules; "
        "from iqa_cli.models import create; create('aliqa', tiny=True); assert 'open_clip' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

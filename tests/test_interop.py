"""Interop with Hugging Face transformers and timm, both ways: the same weights give the same outputs."""

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from mae_course import MaskedAutoencoder, build_model
from mae_course.errors import CheckpointError, ConfigError
from mae_course.interop import (
    from_transformers,
    registry_name,
    settings_from_transformers,
    to_timm,
    to_transformers,
    transformers_config,
    transformers_model,
)
from mae_course.model.vit import load_mae_encoder, vit_from_mae
from tests.conftest import key_words

pytest.importorskip("transformers")

# Not in the registry: one channel, a 6x6 grid, MLP ratio 2.
CUSTOM = dict(
    img_size=24,
    patch_size=4,
    in_chans=1,
    embed_dim=32,
    depth=2,
    num_heads=2,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
    mlp_ratio=2.0,
)


def custom_model(**overrides) -> MaskedAutoencoder:
    return MaskedAutoencoder(**{**CUSTOM, **overrides})


def inputs(model, n=3):
    """Images and masking noise that fit ``model``: (n, C, H, W) and (n, L)."""
    c = model.config
    return torch.randn(n, c["in_chans"], c["img_size"], c["img_size"]), torch.rand(n, model.num_patches)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]


def assert_same_outputs(ours, hf, what: str) -> None:
    """Loss, predictions and mask of ours and the transformers model, for the same images and noise."""
    imgs, noise = inputs(ours)
    with torch.no_grad():
        loss, pred, mask = ours(imgs, mask_ratio=hf.config.mask_ratio, noise=noise)
        out = hf(pixel_values=imgs, noise=noise)
    d_loss, d_pred = abs(loss.item() - out.loss.item()), max_diff(pred, out.logits)
    print(f"\n{what}: max |loss diff| {d_loss:.2e}, max |pred diff| {d_pred:.2e}")
    assert torch.equal(mask, out.mask)
    assert d_loss < 1e-5 and d_pred < 1e-5


@pytest.mark.parametrize("make", [lambda: build_model("mae_vit_mini_patch4_32"), custom_model], ids=["mini", "custom"])
def test_ours_to_transformers_and_back_is_the_same_model(make):
    torch.manual_seed(0)
    ours = make()
    back = from_transformers(to_transformers(ours))
    assert_same_state(ours, back)
    assert back.config == ours.config  # the registry name too, where there is one
    assert ("name" in back.config) == ("name" in ours.config)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize(
    "make", [lambda **kw: build_model("mae_vit_tiny_patch4_32", **kw), custom_model], ids=["tiny", "custom"]
)
def test_transformers_computes_our_loss_and_predictions(make, norm_pix_loss):
    torch.manual_seed(0)
    ours = make(norm_pix_loss=norm_pix_loss).eval()
    hf = to_transformers(ours, mask_ratio=0.6)
    assert hf.config.norm_pix_loss == norm_pix_loss and hf.config.mask_ratio == 0.6 and not hf.training
    assert_same_outputs(
        ours, hf, f"ours -> transformers ({ours.config.get('name', 'custom')}, norm_pix_loss={norm_pix_loss})"
    )


def test_a_transformers_model_becomes_ours_with_the_same_outputs():
    """Weights initialised by transformers (its own init and position tables), then converted."""
    torch.manual_seed(0)
    hf = transformers_model({**CUSTOM, "norm_pix_loss": True}).eval()
    assert_same_outputs(from_transformers(hf), hf, "transformers -> ours (custom, norm_pix_loss=True)")


def test_a_save_pretrained_folder_loads(tmp_path):
    torch.manual_seed(0)
    ours = build_model("mae_vit_mini_patch4_32")
    to_transformers(ours).save_pretrained(tmp_path / "hf")
    for source in (tmp_path / "hf", str(tmp_path / "hf")):
        assert_same_state(ours, from_transformers(source))
    with pytest.raises(CheckpointError, match="not a folder made with save_pretrained"):
        from_transformers(tmp_path / "missing")


CRAFTED_CONFIGS = {  # a change to a save_pretrained folder's config.json -> what the one line says
    "patch_size 0": ({"patch_size": 0}, "model setting patch_size must be a positive integer, got 0"),
    "hidden_size 0": ({"hidden_size": 0}, "model setting embed_dim must be a positive integer, got 0"),
    "no attention heads": ({"num_attention_heads": 0}, "model setting num_heads must be a positive integer, got 0"),
    "3 heads for 128": ({"num_attention_heads": 3}, "embed_dim=128 is not divisible by num_heads=3"),
    "depth -1": ({"num_hidden_layers": -1}, "model setting depth must be a positive integer, got -1"),
    "depth 1e9": ({"num_hidden_layers": 10**9}, f"model setting depth must be at most 256, got {10**9}"),
    "width 2^40": ({"hidden_size": 2**40, "intermediate_size": 2**42}, f"embed_dim must be at most 16384, got {2**40}"),
}


@pytest.mark.parametrize("name", list(CRAFTED_CONFIGS))
def test_a_crafted_save_pretrained_config_is_refused_before_a_model_is_built(tmp_path, monkeypatch, name):
    """They were a ZeroDivisionError, a RuntimeError, a misleading mapping error, or a hang (depth 1e9)."""
    transformers = pytest.importorskip("transformers")
    change, message = CRAFTED_CONFIGS[name]
    to_transformers(build_model("mae_vit_mini_patch4_32")).save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    monkeypatch.setattr(transformers.ViTMAEForPreTraining, "from_pretrained", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(
        CheckpointError, match=f"cannot convert this ViTMAE to the course's model: .*{message}"
    ) as error:
        from_transformers(tmp_path / "hf")
    assert "\n" not in str(error.value)


def damage_weights(folder: Path) -> None:
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[10:30] = b"x" * 20  # the header
    (folder / "model.safetensors").write_bytes(data)


def misshape_weights(folder: Path) -> None:
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    weights[sorted(weights)[0]] = torch.zeros(3)
    safetensors.torch.save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def mistype_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "patch_size": "x"}))


@pytest.mark.parametrize("damage", [damage_weights, misshape_weights, mistype_config])
def test_a_damaged_save_pretrained_folder_is_one_checkpoint_error(tmp_path, damage):
    """A SafetensorError, a RuntimeError about mismatched sizes, or a dataclass validation error before."""
    to_transformers(build_model("mae_vit_mini_patch4_32")).save_pretrained(tmp_path / "hf")
    damage(tmp_path / "hf")
    with pytest.raises(CheckpointError, match=f"cannot load {tmp_path / 'hf'} as a ViTMAE: ") as error:
        from_transformers(tmp_path / "hf")
    assert "\n" not in str(error.value)


def test_a_hub_name_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # only the (empty) cache is tried: no network retries
    with pytest.raises(CheckpointError) as error:
        from_transformers("facebook/vit-mae-base", cache_dir=tmp_path)
    message = str(error.value)
    assert message.startswith("cannot load 'facebook/vit-mae-base' from the Hugging Face hub (offline?): ")
    assert message.endswith("; pass a local folder made with save_pretrained") and "\n" not in message


def test_the_hub_base_config_is_our_base_model():
    """facebook/vit-mae-base's architecture (transformers' defaults) is mae_vit_base_patch16."""
    transformers = pytest.importorskip("transformers")
    settings = settings_from_transformers(transformers.ViTMAEConfig())  # its layer_norm_eps 1e-12 is accepted
    assert registry_name(settings) == "mae_vit_base_patch16"
    assert registry_name(CUSTOM) is None


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"hidden_act": "gelu_new"}, "hidden_act 'gelu_new'"),
        ({"layer_norm_eps": 1e-5}, "layer_norm_eps 1e-05"),
        ({"qkv_bias": False}, "qkv_bias False"),
        ({"decoder_intermediate_size": 40}, "MLP widths"),
    ],
)
def test_what_ours_cannot_compute_is_refused_in_one_line(change, complaint):
    hf_config = transformers_config(CUSTOM)
    for key, value in change.items():
        setattr(hf_config, key, value)
    with pytest.raises(CheckpointError, match=complaint) as error:
        settings_from_transformers(hf_config)
    assert "\n" not in str(error.value)


def test_the_hubs_layer_norm_eps_converts_to_the_official_one():
    """The hub's configs say eps 1e-12 for weights the official code trained with 1e-6: ours keeps 1e-6."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = to_transformers(build_model("mae_vit_mini_patch4_32")).eval()  # eps 1e-6
    config_1e12 = transformers_config(build_model("mae_vit_mini_patch4_32").config)
    config_1e12.layer_norm_eps = 1e-12
    hf_1e12 = transformers.ViTMAEForPreTraining(config_1e12).eval()
    hf_1e12.load_state_dict(hf.state_dict())
    ours = from_transformers(hf_1e12)
    assert all(m.eps == 1e-6 for m in ours.modules() if isinstance(m, torch.nn.LayerNorm))
    imgs, noise = inputs(ours)
    with torch.no_grad():
        pred = ours(imgs, noise=noise)[1]
        d_same, d_eps = (max_diff(pred, h(pixel_values=imgs, noise=noise).logits) for h in (hf, hf_1e12))
    print(f"\nours vs transformers with eps 1e-6: {d_same:.2e}; with the config's eps 1e-12: {d_eps:.2e}")
    assert d_same < 1e-5 and d_eps < 1e-2


# ---------------------------------------------------------------------------------------------- timm
def unmasked_encoder(model: MaskedAutoencoder, imgs: torch.Tensor) -> torch.Tensor:
    """Our encoder on every patch, in grid order: ratio 0 with ascending noise keeps all, unshuffled."""
    noise = torch.arange(model.num_patches, dtype=torch.float32).expand(imgs.shape[0], -1)
    return model.forward_encoder(imgs, mask_ratio=0.0, noise=noise)[0]  # (N, 1 + L, D)


@pytest.mark.parametrize("make", [lambda: build_model("mae_vit_mini_patch4_32"), custom_model], ids=["mini", "custom"])
def test_timm_computes_our_encoder_features(make):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    ours = make().eval()
    vit = to_timm(ours)
    imgs, _ = inputs(ours)
    with torch.no_grad():
        ours_tokens, theirs = unmasked_encoder(ours, imgs), vit.forward_features(imgs)
        pooled = vit(imgs)  # the normed cls token: no head
    print(f"\ntimm features ({ours.config.get('name', 'custom')}): max |diff| {max_diff(ours_tokens, theirs):.2e}")
    assert theirs.shape == ours_tokens.shape and max_diff(ours_tokens, theirs) < 1e-5
    assert max_diff(pooled, ours_tokens[:, 0]) < 1e-5


@pytest.mark.parametrize("global_pool", ["token", "avg"])
def test_timm_computes_our_classifier_logits(global_pool):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    mae = build_model("mae_vit_mini_patch4_32")
    classifier = vit_from_mae(mae.config, num_classes=10, global_pool=global_pool, drop_path=0.1)
    load_mae_encoder(classifier, mae.state_dict())
    torch.nn.init.normal_(classifier.head.weight)  # a head with visible logits (fine-tuning starts near 0)
    classifier.eval()
    vit = to_timm(classifier)
    imgs = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        d = max_diff(classifier(imgs), vit(imgs))
    print(f"\ntimm classifier logits (global_pool={global_pool}): max |diff| {d:.2e}")
    assert vit(imgs).shape == (4, 10) and d < 1e-5


def test_a_timm_name_with_our_architecture_builds_and_matches():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    ours = MaskedAutoencoder(
        img_size=224,
        patch_size=16,
        embed_dim=192,
        depth=12,
        num_heads=3,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
    ).eval()
    vit = to_timm(ours, "vit_tiny_patch16_224")
    imgs = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        d = max_diff(unmasked_encoder(ours, imgs), vit.forward_features(imgs))
    print(f"\ntimm vit_tiny_patch16_224 features: max |diff| {d:.2e}")
    assert d < 1e-5


def test_a_timm_name_of_another_architecture_is_refused():
    pytest.importorskip("timm")
    mini = build_model("mae_vit_mini_patch4_32")
    with pytest.raises(
        ConfigError,
        match=key_words("vit_tiny_patch16_224", "img_size 224 (ours 32)", "patch_size 16 (ours 4)"),
    ):
        to_timm(mini, "vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match="cannot build timm model 'no_such_vit'"):
        to_timm(mini, "no_such_vit")
    with pytest.raises(ConfigError, match="takes a MaskedAutoencoder or the course's VisionTransformer"):
        to_timm(torch.nn.Linear(2, 2))

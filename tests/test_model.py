import math

import pytest
import torch

from mae_course import MaskedAutoencoder, build_model, patchify
from mae_course.model.decoder import masked_mse_loss, norm_pix_target


@pytest.mark.parametrize(
    "name, dim, depth, patch",
    [
        ("mae_vit_base_patch16", 768, 12, 16),
        ("mae_vit_large_patch16", 1024, 24, 16),
        ("mae_vit_huge_patch14", 1280, 32, 14),
    ],
)
def test_paper_models_have_the_official_layout(name, dim, depth, patch, official_keys):
    with torch.device("meta"):  # names and shapes only, no memory
        model = build_model(name)
    sd = model.state_dict()
    assert sorted(sd) == sorted(official_keys(depth, 8))
    grid = 224 // patch
    assert sd["pos_embed"].shape == (1, grid * grid + 1, dim)
    assert sd["patch_embed.proj.weight"].shape == (dim, 3, patch, patch)
    assert sd[f"blocks.{depth - 1}.attn.qkv.weight"].shape == (3 * dim, dim)
    assert sd["decoder_embed.weight"].shape == (512, dim)
    assert sd["mask_token"].shape == (1, 1, 512)
    assert sd["decoder_pos_embed"].shape == (1, grid * grid + 1, 512)
    assert sd["decoder_blocks.7.mlp.fc1.weight"].shape == (2048, 512)
    assert sd["decoder_pred.weight"].shape == (patch * patch * 3, 512)
    assert model.blocks[0].attn.num_heads == (12 if dim == 768 else 16)
    assert model.decoder_blocks[0].attn.num_heads == 16


def test_parameter_counts_match_the_paper():
    with torch.device("meta"):
        sizes = {n: build_model(n) for n in ("mae_vit_base_patch16", "mae_vit_large_patch16", "mae_vit_huge_patch14")}

    def vit_params(m):  # the encoder as a ViT classifier: + a 1000-class head
        dim = m.pos_embed.shape[-1]
        encoder = sum(p.numel() for n, p in m.named_parameters() if not n.startswith(("decoder", "mask_token")))
        return encoder + dim * 1000 + 1000

    # The paper's sizes: ViT-B 86M, ViT-L 304M, ViT-H 632M
    assert [int(vit_params(m) / 1e6) for m in sizes.values()] == [86, 304, 632]


def test_positional_tables_are_fixed_sincos(tiny_model):
    from mae_course import sincos_pos_embed

    m = tiny_model()
    assert not m.pos_embed.requires_grad and not m.decoder_pos_embed.requires_grad
    assert torch.equal(m.pos_embed, sincos_pos_embed(32, 4))
    assert torch.equal(m.decoder_pos_embed, sincos_pos_embed(16, 4))


def test_initialization(tiny_model):
    m = tiny_model(embed_dim=64, depth=4)
    w = m.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # xavier_uniform
    assert torch.equal(m.blocks[0].attn.qkv.bias, torch.zeros_like(m.blocks[0].attn.qkv.bias))
    assert torch.equal(m.decoder_pred.bias, torch.zeros_like(m.decoder_pred.bias))
    assert torch.equal(m.norm.weight, torch.ones(64)) and torch.equal(m.norm.bias, torch.zeros(64))
    pw = m.patch_embed.proj.weight.view(64, -1)  # xavier on the (D, p*p*C) matrix
    assert pw.abs().max() <= math.sqrt(6 / (64 + 48))
    assert 0.01 < m.cls_token.std() < 0.03 and 0.01 < m.mask_token.std() < 0.03


def test_forward_shapes(tiny_model):
    m = tiny_model()
    imgs = torch.randn(3, 3, 16, 16)
    loss, pred, mask = m(imgs, mask_ratio=0.75)
    assert loss.ndim == 0 and pred.shape == (3, 16, 48) and mask.shape == (3, 16)
    assert mask.sum(1).tolist() == [12.0] * 3


def test_encoder_sees_cls_plus_visible_tokens_only(tiny_model):
    m = tiny_model()
    seen = []
    m.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    latent, mask, ids_restore = m.forward_encoder(torch.randn(2, 3, 16, 16), 0.75)
    assert seen == [(2, 1 + 4, 32)] and latent.shape == (2, 5, 32)
    decoder_seen = []
    m.decoder_blocks[0].register_forward_hook(lambda mod, inp, out: decoder_seen.append(inp[0].shape))
    m.forward_decoder(latent, ids_restore)
    assert decoder_seen == [(2, 1 + 16, 16)]


def test_mask_token_in_encoder_baseline(tiny_model):
    m = tiny_model(mask_token_in_encoder=True)
    assert "encoder_mask_token" in m.state_dict() and "mask_token" not in m.state_dict()
    seen = []
    m.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    imgs = torch.randn(2, 3, 16, 16)
    loss, pred, mask = m(imgs)
    assert seen == [(2, 17, 32)] and pred.shape == (2, 16, 48)
    loss.backward()
    assert m.encoder_mask_token.grad is not None and m.encoder_mask_token.grad.abs().sum() > 0


def test_identical_noise_gives_identical_outputs(tiny_model):
    m = tiny_model()
    imgs = torch.randn(2, 3, 16, 16)
    noise = torch.rand(2, 16)
    a, b = m(imgs, noise=noise), m(imgs, noise=noise.clone())
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = m(imgs, noise=torch.rand(2, 16))
    assert not torch.equal(a[2], c[2])


def test_loss_ignores_predictions_of_visible_patches(tiny_model):
    m = tiny_model()
    imgs = torch.randn(2, 3, 16, 16)
    loss, pred, mask = m(imgs)
    changed = pred + 100.0 * (1 - mask).unsqueeze(-1)  # wreck every visible patch's prediction
    assert torch.allclose(m.forward_loss(imgs, changed, mask), loss)
    wrecked_masked = pred + 1.0 * mask.unsqueeze(-1)
    assert m.forward_loss(imgs, wrecked_masked, mask) > loss + 0.5


def test_loss_values_by_hand(tiny_model):
    m = tiny_model()
    imgs = torch.randn(2, 3, 16, 16)
    loss, pred, mask = m(imgs)
    target = patchify(imgs, 4)
    manual = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert torch.allclose(loss, manual)

    m_norm = tiny_model(norm_pix_loss=True)
    loss_n, pred_n, mask_n = m_norm(imgs)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, unbiased=True, keepdim=True)
    t = (target - mean) / torch.sqrt(var + 1e-6)
    assert torch.allclose(loss_n, (((pred_n - t) ** 2).mean(-1) * mask_n).sum() / mask_n.sum())


def test_norm_pix_target_uses_unbiased_variance():
    t = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])
    out = norm_pix_target(t)
    expected = (t - 1.5) / math.sqrt(5 / 3 + 1e-6)  # unbiased var of 0..3 is 5/3
    assert torch.allclose(out, expected)
    assert torch.allclose(out.std(-1, unbiased=True), torch.ones(1, 1), atol=1e-4)


def test_masked_mse_loss_shape_check():
    with pytest.raises(ValueError, match="pred has shape"):
        masked_mse_loss(torch.zeros(1, 4, 3), torch.zeros(1, 4, 2), torch.ones(1, 4))


def test_position_reaches_mask_tokens(tiny_model):
    m = tiny_model()
    imgs = torch.randn(1, 3, 16, 16)
    _, pred, mask = m(imgs)
    masked_preds = pred[0][mask[0].bool()]
    # every removed patch gets its own prediction: the decoder's positional table tells them apart
    assert torch.cdist(masked_preds, masked_preds).add(torch.eye(len(masked_preds))).min() > 1e-4


def test_gradients_reach_the_encoder(tiny_model):
    m = tiny_model()
    loss, _, _ = m(torch.randn(2, 3, 16, 16))
    loss.backward()
    for name in ("patch_embed.proj.weight", "cls_token", "blocks.0.attn.qkv.weight", "norm.weight", "mask_token"):
        grad = m.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert m.pos_embed.grad is None


def test_sampling_strategies_in_the_model(tiny_model):
    imgs = torch.randn(2, 3, 16, 16)
    for sampling in ("block", "grid"):
        _, pred, mask = tiny_model(mask_sampling=sampling)(imgs, mask_ratio=0.75)
        assert mask.sum(1).tolist() == [12.0, 12.0]
    with pytest.raises(ValueError, match="unknown mask_sampling"):
        tiny_model(mask_sampling="stripes")


def test_bad_sizes():
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        MaskedAutoencoder(
            img_size=100,
            patch_size=16,
            embed_dim=32,
            depth=1,
            num_heads=2,
            decoder_embed_dim=16,
            decoder_depth=1,
            decoder_num_heads=2,
        )
    m = MaskedAutoencoder(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    with pytest.raises(ValueError, match="expects 16x16 images, got 32x32"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown model"):
        build_model("mae_vit_gigantic")


def test_registry_overrides_and_config_round_trip():
    m = build_model("mae_vit_tiny_patch4_32", decoder_depth=1, norm_pix_loss=True)
    assert m.config["name"] == "mae_vit_tiny_patch4_32"
    assert m.config["decoder_depth"] == 1 and len(m.decoder_blocks) == 1 and m.norm_pix_loss
    import json

    rebuilt = MaskedAutoencoder(**{k: v for k, v in json.loads(json.dumps(m.config)).items() if k != "name"})
    assert sorted(rebuilt.state_dict()) == sorted(m.state_dict())


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("mae_vit_base_patch16", "vit_base_patch16_224"),
        ("mae_vit_large_patch16", "vit_large_patch16_224"),
        ("mae_vit_huge_patch14", "vit_huge_patch14_224"),
    ],
)
def test_encoder_keys_are_timms_vit_keys(ours, theirs):
    """The encoder shares every key and shape with timm's ViT (without its head)."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        mae = build_model(ours)
        vit = timm.create_model(theirs, pretrained=False, num_classes=0)
    encoder = {k: v.shape for k, v in mae.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    assert encoder == {k: v.shape for k, v in vit.state_dict().items()}


def test_unshuffle_with_mask_tokens_puts_every_token_back():
    from mae_course import random_masking, unshuffle_with_mask_tokens

    x = torch.randn(3, 16, 8)
    x_visible, mask, ids_restore = random_masking(x, 0.75)
    token = torch.full((1, 1, 8), 7.0)
    full = unshuffle_with_mask_tokens(x_visible, token, ids_restore)
    assert full.shape == (3, 16, 8)
    kept = mask == 0
    assert torch.equal(full[kept], x[kept])  # visible tokens back at their own positions
    assert torch.equal(full[~kept], torch.full((int((~kept).sum()), 8), 7.0))  # the mask token elsewhere

"""Looking inside an encoder (lesson 07): the cls token's attention is the block's own, the PCA
colours follow the features' main directions, and neighbours are found by cosine similarity."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from mae_course import build_model
from mae_course.checkpoint import atomic_save
from mae_course.errors import CheckpointError
from mae_course.evaluation.inside import (
    cls_attention,
    inside_figure,
    load_encoder,
    nearest_neighbours,
    neighbour_agreement,
    neighbours_figure,
    pca_colours,
    pooled_features,
)
from mae_course.model.vit import VisionTransformer

TINY = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3)


@pytest.fixture
def vit():
    torch.manual_seed(0)
    model = VisionTransformer(num_classes=0, global_pool="avg", **TINY).eval()
    with torch.no_grad():
        model.cls_token.normal_()
    return model


def test_cls_attention_is_what_the_last_block_computes(vit):
    """Its weights, applied to the block's values, give the block's own attention output for the cls token."""
    imgs = torch.randn(2, 3, 16, 16)
    weights = cls_attention(vit, imgs, include_cls=True)  # (N, heads, 1 + L)
    assert weights.shape == (2, 3, 17) and torch.allclose(weights.sum(-1), torch.ones(2, 3), atol=1e-6)
    block = vit.blocks[-1]
    x = vit.blocks[0](
        torch.cat(
            [(vit.cls_token + vit.pos_embed[:, :1]).expand(2, -1, -1), vit.patch_embed(imgs) + vit.pos_embed[:, 1:]],
            dim=1,
        )
    )
    with torch.no_grad():
        _, _, v = rearrange(block.attn.qkv(block.norm1(x)), "n t (three h d) -> three n h t d", three=3, h=3)
        mine = block.attn.proj(rearrange(weights.unsqueeze(2) @ v, "n h t d -> n t (h d)"))
        theirs = block.attn(block.norm1(x))[:, :1]
    assert torch.allclose(mine, theirs, atol=1e-5)
    patches_only = cls_attention(vit, imgs)
    assert patches_only.shape == (2, 3, 16) and torch.equal(patches_only, weights[:, :, 1:])
    first = cls_attention(vit, imgs, block=0, include_cls=True)
    assert not torch.allclose(first, weights)  # another block, other weights


def test_pca_colours_follow_the_main_direction_and_ignore_offsets():
    g = torch.Generator().manual_seed(0)
    coordinate = torch.randn(2, 50, generator=g)
    direction = F.normalize(torch.randn(8, generator=g), dim=0)
    features = coordinate[..., None] * 5 * direction + 0.1 * torch.randn(2, 50, 8, generator=g)
    colours = pca_colours(features)
    assert colours.shape == (2, 50, 3) and colours.min() >= 0 and colours.max() <= 1
    correlation = torch.corrcoef(torch.stack([colours[..., 0].flatten(), coordinate.flatten()]))[0, 1]
    assert abs(correlation) > 0.98  # red is the main direction
    assert torch.allclose(pca_colours(features + 3.0), colours, atol=1e-4)  # a shared offset changes nothing
    assert torch.allclose(pca_colours(features.clone()), colours)  # the sign convention: same features, same colours
    with pytest.raises(ValueError, match=r"\(N, L, D\) features"):
        pca_colours(torch.randn(4, 8))


def test_nearest_neighbours_by_cosine_similarity():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 1.0], [-1.0, 0.0]])
    assert nearest_neighbours(torch.tensor([[2.0, 0.1]]), gallery, 2).tolist() == [[2, 0]]  # length does not count
    itself = nearest_neighbours(gallery, gallery, 1, exclude=torch.arange(4))
    assert itself[:, 0].tolist() == [2, 2, 0, 1]  # never the query itself
    with pytest.raises(ValueError, match="k must be between 1 and 3"):
        nearest_neighbours(gallery, gallery, 4, exclude=torch.arange(4))


def test_neighbour_agreement_separates_grouped_from_random_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    grouped = F.one_hot(labels, 4).float() * 3 + 0.3 * torch.randn(100, 4, generator=g)
    assert neighbour_agreement(grouped, labels, k=5) == 100.0
    noise = torch.randn(100, 16, generator=g)
    assert 5 < neighbour_agreement(noise, labels, k=5) < 45  # near chance, 25%
    with pytest.raises(ValueError, match="100 feature vectors but 99 labels"):
        neighbour_agreement(noise, labels[:99])


def test_load_encoder_from_an_mae_a_classifier_or_random_weights(tmp_path):
    torch.manual_seed(0)
    mae = build_model(
        "mae_vit_mini_patch4_32",
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    atomic_save({"model": mae.state_dict(), "config": {"model": mae.config}}, tmp_path / "mae.pth")
    encoder = load_encoder(tmp_path / "mae.pth")
    assert torch.equal(encoder.blocks[1].mlp.fc2.weight, mae.blocks[1].mlp.fc2.weight) and not encoder.training
    classifier = VisionTransformer(num_classes=10, **{**TINY, "img_size": 32})
    atomic_save({"model": classifier.state_dict(), "config": {"classifier": classifier.config}}, tmp_path / "cls.pth")
    assert torch.equal(load_encoder(tmp_path / "cls.pth").head.weight, classifier.head.weight)
    one, two = load_encoder(None, mae.config, seed=1), load_encoder(None, mae.config, seed=1)
    assert torch.equal(one.blocks[0].attn.qkv.weight, two.blocks[0].attn.qkv.weight)
    assert not torch.equal(one.blocks[0].attn.qkv.weight, encoder.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="need the architecture"):
        load_encoder(None)
    atomic_save({"model": mae.state_dict()}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="neither an MAE checkpoint nor a fine-tuned classifier"):
        load_encoder(tmp_path / "bare.pth")


def test_the_figures_draw_every_encoder(vit):
    imgs = torch.randn(6, 3, 16, 16)
    encoders = {"one": vit, "two": vit}
    assert len(inside_figure(encoders, imgs[:3]).axes) == 3 * 5  # image row + 2 rows per encoder
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    fig = neighbours_figure(encoders, imgs, labels, ["a", "b"], queries=[0, 1], k=2)
    assert len(fig.axes) == 4 * 3
    assert pooled_features(vit, imgs, batch_size=4).shape == (6, 24)

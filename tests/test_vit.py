import math

import pytest
import torch

from mae_course import build_model
from mae_course.errors import CheckpointError
from mae_course.evaluation.lars import LARS
from mae_course.evaluation.protocols import layer_decay_groups, layer_id
from mae_course.model.vit import VisionTransformer, encoder_state_dict, load_mae_encoder, vit_from_mae

TINY_VIT = dict(
    img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0
)  # = conftest's TINY


def tiny_vit(**overrides) -> VisionTransformer:
    return VisionTransformer(num_classes=5, **{**TINY_VIT, **overrides})


def test_encoder_keys_are_shared_with_the_mae(tiny_model):
    mae = tiny_model()
    vit = tiny_vit(global_pool="token")
    encoder_keys = {k for k in mae.state_dict() if not k.startswith(("decoder", "mask_token"))}
    assert encoder_keys == set(vit.state_dict()) - {"head.weight", "head.bias"}
    avg = tiny_vit(global_pool="avg")
    assert "fc_norm.weight" in avg.state_dict() and "norm.weight" not in avg.state_dict()


def test_loading_an_mae_encoder(tiny_model):
    mae = tiny_model()
    vit = tiny_vit(global_pool="token")
    assert sorted(load_mae_encoder(vit, mae.state_dict())) == ["head.bias", "head.weight"]
    assert torch.equal(vit.blocks[1].attn.qkv.weight, mae.blocks[1].attn.qkv.weight)
    assert torch.equal(vit.pos_embed, mae.pos_embed)
    # The classifier's features are the MAE encoder's output on all patches (no masking).
    imgs = torch.randn(2, 3, 16, 16)
    latent, _, _ = mae.forward_encoder(imgs, mask_ratio=0.0, noise=torch.arange(16.0).expand(2, 16))
    assert torch.allclose(vit.forward_features(imgs), latent[:, 0], atol=1e-5)
    avg = tiny_vit(global_pool="avg")
    assert sorted(load_mae_encoder(avg, mae.state_dict())) == [
        "fc_norm.bias",
        "fc_norm.weight",
        "head.bias",
        "head.weight",
    ]


def test_a_wrong_encoder_is_named(tiny_model):
    mae = tiny_model(depth=1)
    with pytest.raises(CheckpointError, match="missing encoder keys: blocks.1"):
        load_mae_encoder(tiny_vit(), mae.state_dict())
    sd = tiny_model().state_dict()
    sd["blocks.0.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys: blocks.0.extra"):
        load_mae_encoder(tiny_vit(), sd)


def test_positional_table_is_resized_for_another_resolution(tiny_model):
    mae = tiny_model()  # 16 px, 4x4 grid
    vit = tiny_vit(img_size=32)  # 8x8 grid
    load_mae_encoder(vit, mae.state_dict())
    assert vit.pos_embed.shape == (1, 65, 32)
    assert torch.equal(encoder_state_dict(mae.state_dict(), vit)["pos_embed"][:, 0], mae.pos_embed[:, 0])
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_vit_from_mae_config_and_drop_path():
    mae_cfg = build_model("mae_vit_mini_patch4_32").config
    vit = vit_from_mae(mae_cfg, num_classes=10, drop_path=0.2)
    assert len(vit.blocks) == 6 and vit.head.out_features == 10
    rates = [b.drop_path.p if hasattr(b.drop_path, "p") else 0.0 for b in vit.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
    vit.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(vit(x), vit(x))


def test_layer_ids_and_decay_groups():
    vit = tiny_vit()  # depth 2: layers 0 (input), 1, 2 (blocks), 3 (norm and head)
    assert layer_id("pos_embed", 3) == 0 and layer_id("patch_embed.proj.weight", 3) == 0
    assert layer_id("blocks.1.mlp.fc1.weight", 3) == 2 and layer_id("head.weight", 3) == 3
    groups = layer_decay_groups(vit, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert scale[id(vit.head.weight)] == 1.0 and scale[id(vit.norm.weight)] == 1.0
    assert scale[id(vit.blocks[1].attn.qkv.weight)] == 0.5
    assert scale[id(vit.blocks[0].attn.qkv.weight)] == 0.25
    assert scale[id(vit.patch_embed.proj.weight)] == scale[id(vit.cls_token)] == scale[id(vit.pos_embed)] == 0.125
    assert decay[id(vit.head.weight)] == 0.05 and decay[id(vit.head.bias)] == 0.0
    assert decay[id(vit.cls_token)] == decay[id(vit.pos_embed)] == decay[id(vit.norm.weight)] == 0.0
    vit.blocks[0].requires_grad_(False)
    assert id(vit.blocks[0].attn.qkv.weight) not in {
        id(p) for g in layer_decay_groups(vit, 0.05, 0.5) for p in g["params"]
    }


def test_lars_scales_matrix_steps_to_the_weight_norm():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(3))
    w0, b0 = w.detach().clone(), b.detach().clone()
    w.grad, b.grad = torch.randn(4, 3) * 100, torch.randn(3)
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    opt.step()
    # matrices: the step has norm lr * trust * ||w||, along (grad + wd * w)
    step = w0 - w.detach()
    assert step.norm().item() == pytest.approx(0.5 * 0.001 * w0.norm().item(), rel=1e-5)
    direction = w.grad + 0.1 * w0
    assert torch.allclose(step / step.norm(), direction / direction.norm(), atol=1e-3)  # float32: step ~1e-4 of w
    # vectors: plain SGD with momentum, no decay, no scaling
    assert torch.allclose(b0 - b.detach(), 0.5 * b.grad)
    opt.step()  # momentum: buffer = 0.9 * previous + new
    assert torch.allclose(b0 - b.detach(), 0.5 * b.grad * (1 + 1.9))


def test_lars_leaves_zero_weights_unscaled():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.ones(2, 2)
    LARS([w], lr=0.1).step()
    assert torch.allclose(w.detach(), torch.full((2, 2), -0.1))


def test_mae_and_vit_agree_on_param_count(tiny_model):
    mae = tiny_model()
    vit = tiny_vit()
    encoder = sum(p.numel() for n, p in mae.named_parameters() if not n.startswith(("decoder", "mask_token")))
    head = sum(p.numel() for p in vit.head.parameters())
    assert sum(p.numel() for p in vit.parameters()) - head == encoder
    assert math.isclose(vit.num_features, 32)

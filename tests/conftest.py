import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

# A model small enough to build and run in milliseconds, with the course's real code paths.
TINY = dict(
    img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4,
    decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
)  # fmt: skip


# The same small model as constructor overrides of a registry model (for configs and commands).
TINY_OVERRIDES = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@pytest.fixture
def tiny_overrides():
    return dict(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def mini_mae_checkpoint(tmp_path_factory):
    """A course checkpoint of the mini MAE (untrained: the tests only need its weights and config)."""
    from mae_course import build_model
    from mae_course.checkpoint import atomic_save

    torch.manual_seed(0)
    model = build_model("mae_vit_mini_patch4_32")
    path = tmp_path_factory.mktemp("ckpt") / "mae.pth"
    atomic_save({"model": model.state_dict(), "config": {"model": model.config}}, path)
    return path


@pytest.fixture
def tiny_model():
    from mae_course import MaskedAutoencoder

    def make(**overrides):
        torch.manual_seed(0)
        return MaskedAutoencoder(**{**TINY, **overrides})

    return make


def _official_keys(depth: int, decoder_depth: int) -> list[str]:
    """The key list of the official MAE state_dict, written from its documented layout."""
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias"]  # fmt: skip
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    keys += [f"blocks.{i}.{k}" for i in range(depth) for k in block]
    keys += [
        "norm.weight",
        "norm.bias",
        "decoder_embed.weight",
        "decoder_embed.bias",
        "mask_token",
        "decoder_pos_embed",
    ]
    keys += [f"decoder_blocks.{i}.{k}" for i in range(decoder_depth) for k in block]
    keys += ["decoder_norm.weight", "decoder_norm.bias", "decoder_pred.weight", "decoder_pred.bias"]
    return keys


@pytest.fixture
def official_keys():
    return _official_keys

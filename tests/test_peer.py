"""The peer implementation (transformers' ViTMAEForPreTraining) matches ours exactly."""

import pytest
import torch

from mae_course import build_model
from mae_course.experiments.peer import build_peer, load_into_peer, peer_loss
from mae_course.interop import transformers_config
from mae_course.model.registry import MODEL_CONFIGS

pytest.importorskip("transformers")


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_the_peer_computes_our_loss_from_our_weights(norm_pix_loss):
    """Same weights, same noise, same loss: both implement the same method and conventions."""
    torch.manual_seed(0)
    ours = build_model("mae_vit_tiny_patch4_32", norm_pix_loss=norm_pix_loss).eval()
    peer = load_into_peer(ours, build_peer(ours.config)).eval()
    imgs, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 64)
    with torch.no_grad():
        loss = ours(imgs, noise=noise)[0]
        assert peer_loss(peer, imgs, noise).item() == pytest.approx(loss.item(), rel=1e-5)
        # a different mask gives a different loss: the comparison is not vacuous
        assert peer_loss(peer, imgs, torch.rand(3, 64)).item() != pytest.approx(loss.item(), rel=1e-3)


@pytest.mark.parametrize("name", ["mae_vit_base_patch16", "mae_vit_large_patch16"])
def test_the_peer_has_the_papers_architecture(name):
    config = {**MODEL_CONFIGS[name], "mlp_ratio": 4.0}
    hf = transformers_config(config)
    assert (hf.hidden_size, hf.num_hidden_layers, hf.intermediate_size) == (
        config["embed_dim"],
        config["depth"],
        4 * config["embed_dim"],
    )
    assert (hf.decoder_hidden_size, hf.decoder_num_hidden_layers, hf.decoder_intermediate_size) == (512, 8, 2048)
    assert hf.layer_norm_eps == 1e-6 and hf._attn_implementation == "sdpa"


def test_parameter_counts_agree():
    ours = build_model("mae_vit_mini_patch4_32")
    peer = build_peer(ours.config)
    assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in ours.parameters())

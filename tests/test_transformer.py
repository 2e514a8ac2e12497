import math

import pytest
import torch

from mae_course.model.encoder import Attention, Block


def test_attention_matches_hand_written_softmax():
    torch.manual_seed(0)
    attn = Attention(dim=12, num_heads=3)
    x = torch.randn(2, 5, 12)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)  # (3, N, heads, T, d)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(4), dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 12))
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_block_structure():
    block = Block(16, 4)
    assert block.norm1.eps == 1e-6 and block.norm2.eps == 1e-6
    assert block.attn.qkv.weight.shape == (48, 16) and block.attn.qkv.bias is not None
    assert block.mlp.fc1.weight.shape == (64, 16)  # hidden ratio 4
    assert block.mlp.act.approximate == "none"  # exact GELU


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible by the number of heads"):
        Attention(10, 3)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    block = Block(8, 2, drop_path=0.5)
    x = torch.randn(64, 3, 8)
    block.eval()
    a, b = block(x), block(x)
    assert torch.equal(a, b)
    block.train()
    dropped = (block(x) - x).abs().sum(dim=(1, 2)) == 0
    assert 0 < dropped.sum() < 64  # some samples skip both branches entirely

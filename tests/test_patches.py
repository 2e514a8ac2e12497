import pytest
import torch

from mae_course import patchify, unpatchify


def test_round_trip_exact():
    imgs = torch.randn(3, 3, 32, 48)
    x = patchify(imgs, 8)
    assert x.shape == (3, 4 * 6, 8 * 8 * 3)
    assert torch.equal(unpatchify(x, 8, grid_size=(4, 6)), imgs)
    square = torch.randn(2, 3, 16, 16)
    assert torch.equal(unpatchify(patchify(square, 4), 4), square)


def test_unpatchify_then_patchify_is_identity():
    x = torch.randn(2, 16, 4 * 4 * 3)
    assert torch.equal(patchify(unpatchify(x, 4), 4), x)


def test_ordering_against_hand_built_example():
    # Pixel value encodes (channel, row, column) as c*100 + y*10 + x.
    c, y, x = torch.meshgrid(torch.arange(2), torch.arange(4), torch.arange(4), indexing="ij")
    img = (c * 100 + y * 10 + x).float().unsqueeze(0)  # (1, 2, 4, 4)
    tokens = patchify(img, 2)  # 2x2 grid of 2x2 patches, 2 channels -> (1, 4, 8)
    # Token 1 is grid row 0, column 1 (row-major). Inside it: (pixel row, pixel column, channel).
    expected = [
        0 * 100 + 0 * 10 + 2, 1 * 100 + 0 * 10 + 2,  # pixel (0, 0): channels 0, 1
        0 * 100 + 0 * 10 + 3, 1 * 100 + 0 * 10 + 3,  # pixel (0, 1)
        0 * 100 + 1 * 10 + 2, 1 * 100 + 1 * 10 + 2,  # pixel (1, 0)
        0 * 100 + 1 * 10 + 3, 1 * 100 + 1 * 10 + 3,  # pixel (1, 1)
    ]  # fmt: skip
    assert tokens[0, 1].tolist() == expected
    # Token 2 is grid row 1, column 0: its first value is pixel (2, 0) of channel 0.
    assert tokens[0, 2, 0].item() == 20


def test_matches_official_reshape_convention():
    # The official code: reshape (N, C, h, p, w, p) -> einsum 'nchpwq->nhwpqc' -> (N, h*w, p*p*C).
    imgs = torch.randn(2, 3, 12, 12)
    p, h = 4, 3
    ref = torch.einsum("nchpwq->nhwpqc", imgs.reshape(2, 3, h, p, h, p)).reshape(2, h * h, p * p * 3)
    assert torch.equal(patchify(imgs, p), ref)


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 3, 32, 30)])
def test_not_divisible_raises(shape):
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        patchify(torch.zeros(shape), 4)


def test_unpatchify_bad_inputs():
    with pytest.raises(ValueError, match="square grid"):
        unpatchify(torch.zeros(1, 12, 48), 4)
    with pytest.raises(ValueError, match="not a multiple"):
        unpatchify(torch.zeros(1, 16, 50), 4)
    with pytest.raises(ValueError, match="grid 3x3 holds 9"):
        unpatchify(torch.zeros(1, 16, 48), 4, grid_size=(3, 3))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        patchify(torch.zeros(3, 32, 32), 4)

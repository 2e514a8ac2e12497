import math

import pytest
import torch

from mae_course import interpolate_pos_embed, sincos_pos_embed


def test_shape_and_cls_row():
    pe = sincos_pos_embed(64, 14)
    assert pe.shape == (1, 197, 64) and pe.dtype == torch.float32
    assert torch.equal(pe[0, 0], torch.zeros(64))
    assert sincos_pos_embed(64, 14, cls_token=False).shape == (1, 196, 64)


def test_layout_by_hand():
    # D = 8: each axis gets 4 numbers [sin(p w0), sin(p w1), cos(p w0), cos(p w1)],
    # w_k = 1 / 10000**(k / 2): w0 = 1, w1 = 0.01. The first half encodes the column.
    pe = sincos_pos_embed(8, (2, 3))[0, 1:]  # 2 rows, 3 columns, row-major
    row, col = 1, 2
    token = pe[row * 3 + col]

    def code(p):
        return [math.sin(p), math.sin(p * 0.01), math.cos(p), math.cos(p * 0.01)]

    assert token.tolist() == pytest.approx(code(col) + code(row), abs=1e-6)
    # Moving along a row changes only the first half.
    assert torch.equal(pe[3, 4:], pe[5, 4:]) and not torch.equal(pe[3, :4], pe[5, :4])


def test_matches_official_numpy_formula():
    np = pytest.importorskip("numpy")
    d, gs = 16, 4

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(gs, dtype=np.float32), np.arange(gs, dtype=np.float32))  # w first
    grid = np.stack(grid, axis=0).reshape(2, 1, gs, gs)
    emb = np.concatenate([one_d(d // 2, grid[0]), one_d(d // 2, grid[1])], axis=1)
    emb = np.concatenate([np.zeros([1, d]), emb], axis=0)
    assert torch.allclose(sincos_pos_embed(d, gs)[0].double(), torch.from_numpy(emb), atol=1e-6)


def test_dimension_must_divide_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed(30, 4)


def test_interpolation():
    pe = sincos_pos_embed(32, 4)
    assert interpolate_pos_embed(pe, 4) is pe
    bigger = interpolate_pos_embed(pe, 8)
    assert bigger.shape == (1, 65, 32)
    assert torch.equal(bigger[:, :1], pe[:, :1])  # cls row copied
    # Smooth tables resize to something close to the table of the new grid's geometry.
    back = interpolate_pos_embed(bigger, 4)
    assert torch.allclose(back, pe, atol=0.15)
    rect = interpolate_pos_embed(pe, (2, 6))
    assert rect.shape == (1, 13, 32)

import pytest
import torch

from mae_course import block_masking, grid_masking, random_masking
from mae_course.model.masking import block_mask_noise, grid_mask_noise, mask_noise, num_kept


def test_shapes_and_keep_count():
    x = torch.randn(4, 196, 8)
    x_vis, mask, ids_restore = random_masking(x, 0.75)
    assert x_vis.shape == (4, 49, 8)
    assert mask.shape == ids_restore.shape == (4, 196)
    assert mask.sum(1).tolist() == [147.0] * 4
    assert num_kept(64, 0.9) == int(64 * (1 - 0.9)) == 6


def test_ids_restore_is_inverse_and_kept_are_smallest_noise():
    torch.manual_seed(0)
    x = torch.randn(3, 20, 5)
    noise = torch.rand(3, 20)
    x_vis, mask, ids_restore = random_masking(x, 0.6, noise=noise)
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(20).expand(3, 20))
    assert torch.equal(torch.gather(ids_restore, 1, ids_shuffle), torch.arange(20).expand(3, 20))
    len_keep = 8
    keep_idx = ids_shuffle[:, :len_keep]
    assert torch.equal(x_vis, torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, 5)))
    # mask: 0 exactly at the kept indices (original order), 1 elsewhere
    expected = torch.ones(3, 20)
    expected.scatter_(1, keep_idx, 0.0)
    assert torch.equal(mask, expected)


def test_deterministic_with_noise_and_different_per_sample():
    x = torch.randn(8, 64, 4)
    noise = torch.rand(8, 64)
    a = random_masking(x, 0.75, noise=noise)
    b = random_masking(x, 0.75, noise=noise.clone())
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    _, mask, _ = random_masking(x, 0.75)
    assert len({tuple(m.tolist()) for m in mask}) == 8  # every sample gets its own mask


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        random_masking(torch.randn(1, 16, 2), ratio)


def test_ratio_that_keeps_nothing():
    with pytest.raises(ValueError, match="keeps no token"):
        random_masking(torch.randn(1, 16, 2), 0.95)


def test_zero_ratio_keeps_everything_in_noise_order():
    x = torch.randn(2, 9, 3)
    x_vis, mask, ids_restore = random_masking(x, 0.0)
    assert x_vis.shape == x.shape and mask.sum() == 0


def test_noise_shape_checked():
    with pytest.raises(ValueError, match="noise must have shape"):
        random_masking(torch.randn(2, 16, 3), 0.5, noise=torch.rand(2, 15))


def test_block_masking_shapes_ratio_and_blockiness():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 196, 4)
    x_vis, mask, ids_restore = block_masking(x, 0.5, generator=g)
    assert x_vis.shape == (16, 98, 4)
    assert mask.sum(1).tolist() == [98.0] * 16

    # Blocks: removed patches have far more removed 4-neighbours than random masking gives.
    def neighbour_agreement(m):
        grid = m.view(-1, 14, 14)
        same = (grid[:, 1:, :] == grid[:, :-1, :]).float().mean() + (grid[:, :, 1:] == grid[:, :, :-1]).float().mean()
        return same.item() / 2

    _, random_mask, _ = random_masking(x, 0.5)
    assert neighbour_agreement(mask) > neighbour_agreement(random_mask) + 0.2


def test_block_masking_75_exact_and_reproducible():
    n1 = block_mask_noise(4, (8, 8), 0.75, torch.Generator().manual_seed(3))
    n2 = block_mask_noise(4, (8, 8), 0.75, torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2)
    _, mask, _ = random_masking(torch.randn(4, 64, 2), 0.75, noise=n1)
    assert mask.sum(1).tolist() == [48.0] * 4


def test_grid_masking_keeps_one_per_2x2_cell():
    x = torch.randn(6, 64, 3)
    x_vis, mask, _ = grid_masking(x, generator=torch.Generator().manual_seed(0))
    assert x_vis.shape == (6, 16, 3) and mask.sum(1).tolist() == [48.0] * 6
    kept = (1 - mask).view(6, 4, 2, 4, 2).sum(dim=(2, 4))  # kept per 2x2 cell
    assert torch.equal(kept, torch.ones(6, 4, 4))
    grid = (1 - mask).view(6, 8, 8)
    for m in grid:  # a regular lattice: the kept pattern repeats with period 2
        assert torch.equal(m[:-2], m[2:]) and torch.equal(m[:, :-2], m[:, 2:])


def test_grid_masking_rejects_other_ratios_and_odd_grids():
    with pytest.raises(ValueError, match="must be 0.75"):
        grid_mask_noise(1, (8, 8), 0.5)
    with pytest.raises(ValueError, match="even patch grid"):
        grid_mask_noise(1, (7, 7), 0.75)
    with pytest.raises(ValueError, match="unknown mask sampling"):
        mask_noise("checkerboard", 1, (8, 8), 0.75)


def test_equal_noise_keeps_the_lower_index():
    """A stable sort: noise with ties names one mask (the same one ONNX's TopK and the browser explorer choose)."""
    x = torch.arange(8.0).view(1, 8, 1)
    noise = torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.5]])
    x_visible, mask, _ = random_masking(x, 0.5, noise)
    assert x_visible.flatten().tolist() == [1.0, 3.0, 4.0, 6.0]
    _, mask, _ = random_masking(x, 0.75, noise)
    assert mask.flatten().tolist() == [1, 0, 1, 0, 1, 1, 1, 1]
    _, mask, _ = random_masking(x, 0.0, torch.zeros(1, 8))
    assert mask.sum() == 0
    x_visible, _, ids_restore = random_masking(x, 0.25, torch.zeros(1, 8))
    assert x_visible.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]

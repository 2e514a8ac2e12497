"""Planning a full-scale run: the recipe's batch arithmetic and the run's duration."""

import pytest

from mae_course.experiments.scaling import PAPER_BATCH, batch_plan, pretraining_hours
from tests.conftest import key_words


def test_the_papers_batch_on_common_hardware():
    assert batch_plan(PAPER_BATCH, 64, 8) == (8, pytest.approx(2.4e-3))  # lr = 1.5e-4 x 4096 / 256
    assert batch_plan(PAPER_BATCH, 64, 64).accum_iter == 1
    assert batch_plan(PAPER_BATCH, 256, 1).accum_iter == 16


def test_an_unreachable_batch_is_refused_with_the_nearest_ones():
    with pytest.raises(ValueError, match=key_words("4096", "multiples of 768", "3840 or 4608")):
        batch_plan(PAPER_BATCH, 96, 8)


def test_the_official_vit_l_run_took_about_42_hours():
    """The paper's ViT-L: 800 epochs in about 42 h on 64 V100s, i.e. about 106 images/s per GPU."""
    assert pretraining_hours(106, 64, 800) == pytest.approx(42.0, abs=0.1)
    assert pretraining_hours(106, 64, 800, scaling=0.5) == pytest.approx(2 * pretraining_hours(106, 64, 800))


@pytest.mark.parametrize("size, world_size", [(10, 3), (16, 4), (5, 8), (1000, 7), (7, 1)])
def test_rank_indices_are_what_distributed_sampler_gives(size, world_size):
    from torch.utils.data import DistributedSampler

    from mae_course.experiments.scaling import rank_indices

    shares = []
    for rank in range(world_size):
        sampler = DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=3)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            assert rank_indices(size, rank, world_size, epoch, seed=3) == list(sampler)
        shares.append(rank_indices(size, rank, world_size, 0, seed=3))
    assert len({len(s) for s in shares}) == 1 and set().union(*shares) == set(range(size))

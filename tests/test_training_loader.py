"""The training loader: one DataLoader per run, workers that persist, and randomness from (seed, rank, epoch, image)."""

import os

import torch
from torch.utils.data import Dataset

from mae_course.data.batches import TrainingLoader, stream_seed

CPU = torch.device("cpu")


class RandomItems(Dataset):
    """Item i is (a random draw from torch's global generator, the worker's process id): what a random
    transform does, and who did it."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int):
        return torch.rand(2), os.getpid()


def draws(workers: int, epoch: int = 0, indices=range(16), rank: int = 0, seed: int = 0, loader=None):
    loader = loader or TrainingLoader(RandomItems(), 4, CPU, workers, seed=seed, rank=rank)
    batches = list(loader.epoch(epoch, list(indices)))
    return torch.cat([x for x, _ in batches]), {int(p) for _, pids in batches for p in pids}


def test_with_workers_each_item_draws_from_its_own_seed():
    """Crops used to come from each worker's own stream, seeded by the epoch only: the same on every rank,
    and different after a mid-epoch resume or with another number of workers. Now they depend on
    (seed, rank, epoch, index) alone."""
    one, _ = draws(workers=1)
    two, _ = draws(workers=2)
    assert torch.equal(one, two)  # whichever worker reads an item
    tail, _ = draws(workers=2, indices=range(8, 16))
    assert torch.equal(tail, one[8:])  # a resumed epoch draws what the uninterrupted one drew
    for other in (dict(rank=1), dict(epoch=1), dict(seed=1)):
        assert not torch.isclose(draws(workers=1, **other)[0], one).any(), other  # every stream its own
    torch.manual_seed(stream_seed(0, 0, 0, 5))
    assert torch.equal(one[5], torch.rand(2))  # item 5 of epoch 0 on rank 0: exactly its stream


def test_without_workers_items_draw_from_this_process_s_generator():
    """In the main process (the built-in data's default) the trainer's seeded, checkpointed generator is used."""
    torch.manual_seed(3)
    first, _ = draws(workers=0)
    torch.manual_seed(3)
    assert torch.equal(draws(workers=0)[0], first)
    torch.manual_seed(3)
    assert torch.equal(first.flatten(), torch.rand(32))


def test_the_workers_start_once_and_persist_across_epochs():
    loader = TrainingLoader(RandomItems(), 4, CPU, num_workers=2)
    _, first = draws(2, epoch=0, loader=loader)
    _, second = draws(2, epoch=1, loader=loader)
    assert len(first) == 2 and first == second and os.getpid() not in first


def test_stream_seeds_are_distinct_and_stable():
    seeds = {stream_seed(0, rank, epoch, k) for rank in range(4) for epoch in range(4) for k in range(64)}
    assert len(seeds) == 4 * 4 * 64 and all(0 <= s < 2**63 for s in seeds)
    assert stream_seed(1, 0) != stream_seed(0, 1)  # seed + rank would make these equal
    assert stream_seed(7, 1, 2, 3) == stream_seed(7, 1, 2, 3) and stream_seed(-1, 0) == stream_seed(2**64 - 1, 0)


def test_the_gpu_pipeline_seeds_each_batch_from_the_rank_and_the_epoch(tmp_path):
    """Its crops come from stream_seed(seed, rank, epoch, batch): another rank or epoch crops the same
    picture differently; the same ones crop it alike."""
    from mae_course.data.batches import PretrainingImages
    from tests.conftest import write_images

    root = write_images(tmp_path / "one", {"a/a_0.JPEG": (96, 80)})
    for k in range(8):
        path = tmp_path / "images" / "a" / f"a_{k}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((root / "a" / "a_0.JPEG").read_bytes())
    images = PretrainingImages(str(tmp_path / "images"), 32, CPU, "gpu")

    def first_batch(rank, epoch):
        (imgs,) = next(iter(images.loader(4, seed=0, rank=rank).epoch(epoch, range(8))))
        return imgs

    reference = first_batch(0, 0)
    assert torch.equal(first_batch(0, 0), reference)
    for rank, epoch in ((1, 0), (0, 1)):
        other = first_batch(rank, epoch)
        assert all(not torch.allclose(a, b) for a, b in zip(reference, other, strict=True)), (rank, epoch)

"""Batches prepared ahead in a background thread (mae_course.data.prefetch), run on the CPU.

The CUDA side (a stream of its own, an event per batch, record_stream) needs a GPU; here: the same
batches in the same order, errors raised where they would have been, and no thread left behind."""

import threading
import time

import pytest
import torch

from mae_course.data.gpu_pipeline import EncodedImageFolder, GpuPretrainTransform, device_batches, encoded_loader
from mae_course.data.prefetch import prefetched
from mae_course.errors import DataError
from tests.conftest import write_images


def threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "mae-course-prefetch"]


def test_the_same_batches_in_the_same_order_prepared_ahead():
    produced = []

    def batches():
        for k in range(6):
            produced.append(k)
            yield (torch.full((2,), float(k)),)

    seen = []
    for (batch,) in prefetched(batches(), "cpu", depth=2):
        time.sleep(0.05)  # the training step: meanwhile the thread works ahead
        seen.append(int(batch[0]))
        if len(seen) == 1:
            assert len(produced) >= 2  # prepared ahead, while this one "trained"
    assert seen == list(range(6)) and not threads()


def test_an_error_in_the_thread_is_raised_in_the_caller():
    def batches():
        yield (torch.zeros(1),)
        raise DataError("cannot decode image a.JPEG")

    got = []
    with pytest.raises(DataError, match="a.JPEG"):
        for batch in prefetched(batches(), "cpu"):
            got.append(batch)
    assert len(got) == 1 and not threads()


def test_stopping_early_ends_the_thread_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            k = 0
            while True:
                k += 1
                yield (torch.tensor([k]),)
        finally:
            closed.set()

    for k, _ in enumerate(prefetched(endless(), "cpu", depth=3)):
        if k == 2:
            break  # Ctrl-C at a step boundary, or the end of an epoch's steps
    assert closed.wait(5) and not threads()


def test_the_gpu_pipeline_prepared_ahead_gives_what_it_gives_in_order(tmp_path):
    """device_batches with per-batch seeds works ahead in a thread; its batches equal those made one by one."""
    root = write_images(tmp_path, {f"{c}/{c}_{k}.JPEG": (120 + 10 * k, 90) for c in "ab" for k in range(6)})
    dataset = EncodedImageFolder(root)
    transform = GpuPretrainTransform(24)

    def seed_of(k):
        return 1000 + k

    ahead = list(device_batches(encoded_loader(dataset, batch_size=4), transform, "cpu", seed_of, prefetch=2))
    one_by_one = list(device_batches(encoded_loader(dataset, batch_size=4), transform, "cpu", seed_of, prefetch=0))
    assert len(ahead) == 3 and not threads()
    for (a, la), (b, lb) in zip(ahead, one_by_one, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    resumed = list(
        device_batches(
            encoded_loader(torch.utils.data.Subset(dataset, range(4, 12)), batch_size=4),
            transform,
            "cpu",
            seed_of,
            first=1,
        )
    )
    assert torch.equal(resumed[0][0], ahead[1][0])  # batch 1 crops the same after a resume

"""Lesson 09: preparing the next batches in a background thread, on a side CUDA stream, while this one trains.

    for imgs, labels in prefetched(batches, device):   # batches: any iterator of tuples of tensors
        ...

Decoding JPEGs on the GPU blocks the thread that asks for it: torchvision's batched nvjpeg decoder
ends with a stream synchronize. Asked for by the training thread, it would stop that thread from
queueing the next steps' kernels, and the GPU would idle. Here a background thread produces the
batches, up to ``depth`` ahead, and its GPU work goes to a CUDA stream of its own; the training
thread only waits, on the GPU, for the batch it takes:

* the producing thread records an event on its stream after each batch;
* the training thread makes its own stream wait for that event (a GPU-side wait: the host does not
  block), and marks each tensor as used on its stream (``record_stream``), so that the caching
  allocator does not hand the memory to the side stream again while training still reads it.

An error in the thread (an unreadable file, say) is raised in the training thread, as it would
have been without the thread. Stopping early (Ctrl-C at a step boundary, the end of an epoch)
ends the thread: what it had prepared ahead is dropped. On the CPU there are no streams and the
thread simply works ahead. Whatever the batches draw at random must come from their own
generators, not torch's global one, which the training thread draws from at the same time.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

import torch

Batch = TypeVar("Batch", bound=tuple)
_DONE, _FAILED = object(), object()  # what the thread hands over instead of a batch at the end


def prefetched(batches: Iterator[Batch], device: torch.device | str, depth: int = 2) -> Iterator[Batch]:
    """Yield the items of ``batches`` (tuples of tensors), produced in a background thread ``depth`` ahead."""
    device = torch.device(device)
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    side = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(item) -> bool:
        """Hand ``item`` over, unless the consumer has stopped; False then."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                for batch in batches:
                    event = None
                    if side is not None:
                        event = torch.cuda.Event()
                        event.record(side)
                    if not put((batch, event)):
                        return
        except BaseException as error:  # noqa: BLE001 - handed to the training thread, raised there
            put((_FAILED, error))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            put((_DONE, None))

    thread = threading.Thread(target=produce, name="mae-course-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            batch, event = ready.get()
            if batch is _DONE:
                return
            if batch is _FAILED:
                raise event
            if event is not None:
                current = torch.cuda.current_stream(device)
                current.wait_event(event)
                for tensor in batch:
                    if isinstance(tensor, torch.Tensor) and tensor.is_cuda:
                        tensor.record_stream(current)
            yield batch
    finally:
        stop.set()
        thread.join()

"""How much faster the batched GPU crops are than a loop over the images, on this machine.

    python scripts/batched_crop_speed.py [--images 64] [--size 224] [--rounds 7] [--device cpu|cuda]

Both contenders crop, resize (antialiased bicubic) and flip the same decoded ImageNet-sized JPEGs
with the same boxes: the per-image loop of torchvision's resized_crop that the GPU pipeline used
to run, and mae_course.data.batched_crops. They take turns, round after round; the figure is the
median of the per-round ratios, with the lowest and the highest (mae_course.experiments.timing).
It also counts the tensor operations each dispatches for the batch: on a GPU each is at least one
kernel launch queued by the host, which is what the batched version saves there. On a CPU the
per-image loop wins: its uint8 kernels resize one image with vector instructions, while the
batched products compute dense, mostly zero matrices.
"""

import argparse
import tempfile

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from mae_course.data.batched_crops import crop_resize_flip, sample_crops
from mae_course.data.gpu_pipeline import EncodedImageFolder, GpuPretrainTransform
from mae_course.data.jpeg_folder import make_jpeg_folder
from mae_course.experiments.timing import alternating_seconds, ratio


def per_image(images, boxes, size):
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8, device=images[0].device)
    for k, image in enumerate(images):
        top, left, h, w = (int(t[k]) for t in boxes[:4])
        crop = F.resized_crop(image, top, left, h, w, [size, size], InterpolationMode.BICUBIC, antialias=True)
        out[k] = F.horizontal_flip(crop) if boxes.flip[k] else crop
    return out


class OpCounter(TorchDispatchMode):
    """Counts the ATen operations run inside it that compute (on a GPU, a kernel launch or more for each):
    views (reshape, split, select) only describe memory and are left out."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def operations(work) -> int:
    with OpCounter() as counter:
        work()
    return counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        make_jpeg_folder(folder, images=args.images, classes=4)
        dataset = EncodedImageFolder(f"{folder}/train")
        images, _ = GpuPretrainTransform(args.size).decode([dataset[i][0] for i in range(len(dataset))], device)
    images = [image.contiguous() for image in images]  # as nvjpeg returns them (libjpeg's are channels-last views)
    boxes = sample_crops(
        torch.tensor([tuple(i.shape[-2:]) for i in images]), generator=torch.Generator().manual_seed(0)
    )
    contenders = {
        "loop": lambda: per_image(images, boxes, args.size),
        "batched": lambda: crop_resize_flip(images, boxes, args.size),
    }
    seconds = alternating_seconds(contenders, rounds=args.rounds)
    n = len(images)
    for name, times in seconds.items():
        print(
            f"{name:8s} {n / min(times):8.1f} images/s at best, {n / sorted(times)[len(times) // 2]:8.1f} median, "
            f"{operations(contenders[name])} tensor operations per batch"
        )
    print(f"batched vs loop: {ratio(seconds['loop'], seconds['batched'])} ({n} images, {args.size} px, {device})")


if __name__ == "__main__":
    main()

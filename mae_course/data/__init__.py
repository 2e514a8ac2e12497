"""Data: what the course ships or generates, the datasets it reads, and how images become batches.

builtin       the built-in shapes dataset (generated and cached, no download)
photos        the shipped photos;  shipped: the shipped checkpoint and results
image_files   reading image files safely (corrupt files, decompression bombs, 16-bit images)
datasets      a dataset by name or path: builtin, cifar10, stl10, imagenette, an ImageFolder
transforms    the augmentations of pretraining, fine-tuning and probing, and evaluation's crop
gpu_pipeline  decoding and augmenting on the GPU: the workers only read the files
batches       the pretraining batches on the device, from either pipeline
jpeg_folder   a generated ImageNet-like folder of JPEGs, for loader benchmarks
prepare       a pre-resized JPEG copy of an image folder
"""

from .builtin import CLASSES, BuiltinShapes, load_split, make_split, render_shapes
from .photos import list_photos, load_image, load_photo, photo_dir
from .shipped import shipped_checkpoint, shipped_dir, shipped_results

__all__ = [
    "CLASSES",
    "BuiltinShapes",
    "list_photos",
    "load_image",
    "load_photo",
    "load_split",
    "make_split",
    "photo_dir",
    "render_shapes",
    "shipped_checkpoint",
    "shipped_dir",
    "shipped_results",
]

"""Regenerate data/photos/ from scikit-image's sample images (a one-off, for maintainers).

    pip install scikit-image && python scripts/make_photos.py

Each photo is center-cropped to a square and resized to 256x256 (the paper's evaluation
resize before a 224 crop), then saved as JPEG quality 90. Credits: data/photos/CREDITS.md.
"""

from pathlib import Path

import skimage.data
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
OUT = Path(__file__).resolve().parents[1] / "data" / "photos"

for name in PHOTOS:
    img = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).contiguous()
    side = min(img.shape[1:])
    img = TF.center_crop(img, [side, side])
    img = TF.resize(img, [256, 256], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(OUT / f"{name}.jpg", quality=90)
    print(f"wrote {OUT / name}.jpg")

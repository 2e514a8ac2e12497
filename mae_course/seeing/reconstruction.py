"""Lesson 06: turning an MAE's predictions back into pictures, and drawing them.

Figure 2 of the paper shows, per image: the masked input | the reconstruction | the
original. The course's figure adds the reconstruction with the visible patches pasted
back and a per-patch error map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.transforms import denormalize
from ..figures import CourseFigure
from ..model.decoder import norm_pix_target
from ..model.mae import MaskedAutoencoder
from ..model.masking import mask_noise
from ..model.patches import patchify, unpatchify


@dataclass
class Reconstruction:
    """Everything in image space, (N, 3, H, W) in [0, 1], plus the (N, L) mask and error."""

    original: torch.Tensor
    masked: torch.Tensor  # removed patches greyed out
    reconstruction: torch.Tensor  # the model's prediction for every patch
    pasted: torch.Tensor  # the prediction in removed patches, the original elsewhere
    mask: torch.Tensor  # (N, L) 1 = removed
    patch_error: torch.Tensor  # (N, L) MSE per patch, in the loss's own target space


def denormalize_patches(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Undo :func:`norm_pix_target` for predictions, using each *target* patch's statistics.

    A model trained on normalized pixels predicts every patch without its mean and scale. To
    draw the prediction, give it back the mean and ``sqrt(var + eps)`` (unbiased variance) of
    the true patch at the same place: ``pred * sqrt(var + eps) + mean``. This borrows the
    target's statistics (see :func:`predictions_to_pixels`): a way to look, not a prediction.

    Args:
        pred: (N, L, p*p*C) predictions in normalized-pixel space.
        target: (N, L, p*p*C) the true patches, in pixel space.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return pred * (var + eps) ** 0.5 + mean


def predictions_to_pixels(model: MaskedAutoencoder, imgs: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """(N, L, p*p*C) predictions -> (N, L, p*p*C) in the normalized-image space of ``imgs``.

    A model trained with ``norm_pix_loss`` predicts each patch normalized by its own mean and
    std; to draw it, those statistics are taken from the original patch. That is a convention of
    third-party code, not the official demo's (it draws ``mae_visualize_vit_large``, a model
    trained on plain pixels), and it leaks the target: the brightness and contrast of removed
    patches come from the original, which the model never saw. The picture shows the predicted
    *structure* only.
    """
    if not model.norm_pix_loss:
        return pred
    return denormalize_patches(pred.float(), patchify(imgs, model.patch_size).float())


def paste_visible(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The usual MAE output: the prediction where a patch was removed, the original elsewhere.

    Args:
        pred, target: (N, L, p*p*C) predicted and true patches (in the same space).
        mask: (N, L) 1 for removed patches.

    Returns:
        (N, L, p*p*C) patches.
    """
    removed = mask.unsqueeze(-1).to(pred.dtype)
    return pred * removed + target * (1 - removed)


@torch.no_grad()
def reconstruct(
    model: MaskedAutoencoder,
    imgs: torch.Tensor,
    mask_ratio: float = 0.75,
    noise: torch.Tensor | None = None,
    seed: int | None = 0,
) -> Reconstruction:
    """Run ``model`` on normalized ``imgs`` (N, C, H, W) and return the pictures.

    The masking noise is ``noise`` if given, else drawn with the model's sampling from a
    generator of its own seeded with ``seed`` (the same seed gives the same masks, and torch's
    global generator is left untouched: a figure drawn during training never changes what the
    training draws next), else drawn from the global generator.
    """
    was_training = model.training
    model.eval()
    try:
        if noise is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
            noise = mask_noise(model.mask_sampling, imgs.shape[0], model.grid_size, mask_ratio, imgs.device, generator)
        _, pred, mask = model(imgs, mask_ratio=mask_ratio, noise=noise)
    finally:
        model.train(was_training)
    p = model.patch_size
    pixels = predictions_to_pixels(model, imgs, pred).float()
    target = patchify(imgs, p).float()
    if model.norm_pix_loss:
        error = ((pred.float() - norm_pix_target(target)) ** 2).mean(-1)
    else:
        error = ((pred.float() - target) ** 2).mean(-1)

    grey = torch.zeros_like(target)  # 0 in normalized space = the dataset's mean colour
    masked = unpatchify(paste_visible(grey, target, mask), p, model.grid_size)
    recon = unpatchify(pixels, p, model.grid_size)
    pasted = unpatchify(paste_visible(pixels, target, mask), p, model.grid_size)
    return Reconstruction(
        original=denormalize(imgs.float()),
        masked=denormalize(masked),
        reconstruction=denormalize(recon),
        pasted=denormalize(pasted),
        mask=mask,
        patch_error=error,
    )


def reconstruction_figure(
    model: MaskedAutoencoder,
    imgs: torch.Tensor,
    mask_ratio: float = 0.75,
    seed: int | None = 0,
    title: str | None = None,
    show_error: bool = False,
) -> CourseFigure:
    """One row per image: original | masked | reconstruction | reconstruction + visible.

    With ``show_error`` a fifth column maps each patch's error (brighter = worse).
    """
    rec = reconstruct(model, imgs, mask_ratio=mask_ratio, seed=seed)
    columns = [
        ("original", rec.original),
        (f"masked {mask_ratio:.0%}", rec.masked),
        ("reconstruction", rec.reconstruction),
        ("reconstruction\n+ visible", rec.pasted),
    ]
    n = imgs.shape[0]
    ncols = len(columns) + int(show_error)
    fig = CourseFigure(figsize=(1.6 * ncols, 1.6 * n + (0.5 if title else 0.2)), layout="constrained")
    axes = fig.subplots(n, ncols, squeeze=False)
    for row in range(n):
        for col, (name, images) in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(images[row].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            if row == 0:
                ax.set_title(name, fontsize=9)
        if show_error:
            ax = axes[row, -1]
            err = rec.patch_error[row].reshape(model.grid_size).cpu().numpy()
            ax.imshow(err, cmap="magma", interpolation="nearest")
            if row == 0:
                ax.set_title("error per patch", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig

"""Lesson 06: the masking explorer, what an MAE reconstructs under any mask you choose.

The logic is one pure function, :func:`explore`, from a model and an :class:`ExplorerSettings`
to a figure: original | masked | reconstruction | reconstruction with the visible patches pasted
back | the error of every patch (the paper's Figures 2, 4 and 6). :func:`explorer_widget` only
wires ipywidgets controls to it, with the API that ipywidgets 7.7 (Colab) and 8 share.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F

from ..data import BuiltinShapes, list_photos, load_image, load_photo
from ..data.datasets import builtin_source_size
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError
from ..figures import CourseFigure
from ..model.decoder import norm_pix_target
from ..model.mae import MaskedAutoencoder
from ..model.masking import SAMPLINGS, mask_noise, num_kept
from ..model.patches import patchify, unpatchify
from .reconstruction import paste_visible, reconstruct


@dataclass(frozen=True)
class ExplorerSettings:
    """Everything the explorer's controls set.

    ``image`` is "builtin:<index>" (a test image of the built-in data), "photo:<name>" (a shipped
    photo), or the path of any image file.
    """

    mask_ratio: float = 0.75
    sampling: str = "random"
    image: str = "builtin:0"
    seed: int = 0
    norm_pix_view: bool = False


def image_choices(builtin: int = 8) -> list[str]:
    """The images the picker offers: some built-in test images and every shipped photo."""
    return [f"builtin:{i}" for i in range(builtin)] + [f"photo:{name}" for name in list_photos()]


def load_explorer_image(image: str, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1] for an ``ExplorerSettings.image`` value."""
    if image.startswith("builtin:"):
        index = int(image.split(":", 1)[1])
        shapes = BuiltinShapes("test", builtin_source_size(size))
        if not 0 <= index < len(shapes):
            raise ConfigError(f"the built-in test set has images 0 to {len(shapes) - 1}, not {index}")
        img = shapes[index][0]
        return (
            img
            if img.shape[-1] == size
            else F.interpolate(img[None], size=(size, size), mode="bicubic", antialias=True)[0].clamp(0, 1)
        )
    if image.startswith("photo:"):
        return load_photo(image.split(":", 1)[1], size)
    if not image.strip():
        raise ConfigError("no image chosen: give a built-in index, a photo name or a file path")
    return load_image(Path(image), size)


def normalized_image(image: str, size: int) -> torch.Tensor:
    """(1, 3, size, size), ImageNet-normalized and ready for a model; ``image`` as in ExplorerSettings."""
    img = load_explorer_image(image, size)
    mean = img.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = img.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return ((img - mean) / std)[None]


def check_settings(model: MaskedAutoencoder, settings: ExplorerSettings) -> ExplorerSettings:
    """Validate the settings against the model; raise ConfigError with what to change."""
    if settings.sampling not in SAMPLINGS:
        raise ConfigError(f"unknown sampling {settings.sampling!r}; choose one of {', '.join(SAMPLINGS)}")
    if settings.sampling == "grid" and abs(settings.mask_ratio - 0.75) > 1e-9:
        raise ConfigError("grid sampling keeps one patch of every 2x2 cell: its ratio is always 75%")
    try:
        num_kept(model.num_patches, settings.mask_ratio)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return settings


def explore(model: MaskedAutoencoder, settings: ExplorerSettings = ExplorerSettings()) -> CourseFigure:
    """The explorer's figure for one choice of settings (a pure function of its arguments)."""
    check_settings(model, settings)
    size = model.patch_embed.img_size
    imgs = normalized_image(settings.image, size)
    generator = torch.Generator().manual_seed(settings.seed)
    noise = mask_noise(settings.sampling, 1, model.grid_size, settings.mask_ratio, generator=generator)
    rec = reconstruct(model, imgs, settings.mask_ratio, noise=noise)
    p = model.patch_size
    panels = [
        ("original", rec.original[0]),
        (f"masked ({settings.mask_ratio:.0%}, {settings.sampling})", rec.masked[0]),
        ("reconstruction", rec.reconstruction[0]),
        ("reconstruction + visible", rec.pasted[0]),
    ]
    if settings.norm_pix_view:  # the normalized-pixel space: what a norm-pix model is trained to predict
        with torch.no_grad():
            _, pred, mask = model(imgs, mask_ratio=settings.mask_ratio, noise=noise)
        target = norm_pix_target(patchify(imgs, p))
        shown = pred if model.norm_pix_loss else norm_pix_target(pred)

        def view(t: torch.Tensor) -> torch.Tensor:
            return (unpatchify(t, p, model.grid_size)[0] * 0.2 + 0.5).clamp(0, 1)

        panels = [
            ("original", rec.original[0]),
            ("normalized target", view(target)),
            ("prediction (normalized)", view(shown)),
            ("prediction + visible", view(paste_visible(shown, target, mask))),
        ]
    fig = CourseFigure(figsize=(13, 3.0), layout="constrained")
    axes = fig.subplots(1, 5)
    for ax, (title, image) in zip(axes, panels, strict=False):
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    error = rec.patch_error[0].clone()
    error[rec.mask[0] == 0] = float("nan")  # visible patches are not scored: drawn grey, apart from the scale
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")
    heat = axes[4].imshow(
        error.reshape(model.grid_size).numpy(),
        cmap=cmap,
        vmin=0,
        vmax=error_scale(model, imgs),
        interpolation="nearest",
    )
    axes[4].set_title("error per removed patch (grey: visible)", fontsize=9)
    bar = fig.colorbar(heat, ax=axes[4], fraction=0.046, pad=0.04)
    bar.set_label("mean squared error per value", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    removed = rec.mask[0].bool()
    fig.suptitle(
        f"{settings.image}: mean squared error on the {int(removed.sum())} removed patches = "
        f"{rec.patch_error[0][removed].mean():.3f}" + (" (normalized-pixel target)" if model.norm_pix_loss else ""),
        fontsize=10,
    )
    return fig


def error_scale(model: MaskedAutoencoder, imgs: torch.Tensor) -> float:
    """The top of the error map's colour scale for an image: the error of the most contrasted patch
    when predicted as flat grey (the dataset's mean colour, or the patch's own mean for norm-pix
    targets). It depends on the image only, so the scale stays put while the ratio and seed move."""
    target = patchify(imgs, model.patch_size).float()
    if model.norm_pix_loss:
        target = norm_pix_target(target)
    return max(float((target**2).mean(-1).max()), 1e-6)


def ratio_figure(
    model: MaskedAutoencoder, image: str = "builtin:0", ratios=(0.75, 0.85, 0.95), seed: int = 0
) -> CourseFigure:
    """The paper's Figure 4: one model, trained at 75%, applied at higher and higher ratios."""
    size = model.patch_embed.img_size
    imgs = normalized_image(image, size)
    fig = CourseFigure(figsize=(2.2 * len(ratios), 4.6), layout="constrained")
    axes = fig.subplots(2, len(ratios), squeeze=False)
    for col, ratio in enumerate(ratios):
        noise = torch.rand(1, model.num_patches, generator=torch.Generator().manual_seed(seed))
        rec = reconstruct(model, imgs, ratio, noise=noise)
        axes[0, col].imshow(rec.masked[0].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[0, col].set_title(
            f"{ratio:.0%} removed ({model.num_patches - int(rec.mask.sum())} of {model.num_patches} kept)", fontsize=9
        )
        axes[1, col].imshow(rec.pasted[0].permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[1, col].set_title("reconstruction + visible", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


class Explorer:
    """The widget: controls wired to :func:`explore`. ``.widget`` is what to display.

    ``last_settings`` and ``last_figure`` hold what was drawn last (tests drive the controls and
    read them; a learner just moves the sliders).
    """

    def __init__(
        self, model: MaskedAutoencoder, settings: ExplorerSettings = ExplorerSettings(), images: list[str] | None = None
    ):
        import ipywidgets as widgets  # only the API shared by ipywidgets 7.7 and 8

        self.model = model
        choices = images or image_choices()
        self.ratio = widgets.FloatSlider(
            value=settings.mask_ratio,
            min=0.05,
            max=0.95,
            step=0.05,
            description="mask ratio",
            continuous_update=False,
            readout_format=".2f",
        )
        self.sampling = widgets.Dropdown(options=list(SAMPLINGS), value=settings.sampling, description="sampling")
        self.image = widgets.Dropdown(
            options=choices, value=settings.image if settings.image in choices else choices[0], description="image"
        )
        self.own_file = widgets.Text(
            value="", placeholder="or your own image file (relative to this notebook's folder)", description="own image"
        )
        self.seed = widgets.IntText(value=settings.seed, description="seed")
        self.norm_pix = widgets.Checkbox(value=settings.norm_pix_view, description="normalized-pixel view")
        self.output = widgets.Output()
        self.message = widgets.HTML(value="")
        controls = [self.ratio, self.sampling, self.image, self.own_file, self.seed, self.norm_pix]
        for control in controls:
            control.observe(self._changed, names="value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.ratio, self.sampling, self.seed]),
                widgets.HBox([self.image, self.own_file, self.norm_pix]),
                self.message,
                self.output,
            ]
        )
        self.last_settings: ExplorerSettings | None = None
        self.last_figure: CourseFigure | None = None
        self.last_error: str | None = None
        self.render()

    def settings(self) -> ExplorerSettings:
        image = self.own_file.value.strip() or self.image.value
        return ExplorerSettings(self.ratio.value, self.sampling.value, image, int(self.seed.value), self.norm_pix.value)

    def _changed(self, change) -> None:
        if change["owner"] is self.sampling and change["new"] == "grid" and self.ratio.value != 0.75:
            self.ratio.value = 0.75  # grid sampling has one ratio; this change renders
            return
        self.render()

    def render(self) -> None:
        settings = self.settings()
        try:
            figure = explore(self.model, settings)
        except (ConfigError, FileNotFoundError, ValueError) as e:
            self.last_error = str(e)
            self.message.value = f"<span style='color:#b00'>{e}</span>"
            return
        self.last_error, self.message.value = None, ""
        self.last_settings, self.last_figure = settings, figure
        self.output.clear_output(wait=True)
        with self.output:
            from IPython.display import display

            display(figure)


def explorer_widget(model: MaskedAutoencoder, **settings) -> Explorer:
    """An :class:`Explorer` for ``model`` starting at the given settings."""
    return Explorer(model, replace(ExplorerSettings(), **settings))

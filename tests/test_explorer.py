"""The masking explorer: the pure function, and the widget driven headlessly."""

import pytest
import torch

from mae_course import build_model
from mae_course.errors import ConfigError, DataError
from mae_course.seeing.explorer import Explorer, ExplorerSettings, explore, image_choices, ratio_figure
from mae_course.seeing.hub import RELEASED, download_command, download_released, load_released


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mae_vit_mini_patch4_32")


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_explore_draws_the_five_panels(model):
    fig = explore(model, ExplorerSettings(mask_ratio=0.5, sampling="block", image="photo:chelsea", seed=3))
    assert titles(fig) == [
        "original",
        "masked (50%, block)",
        "reconstruction",
        "reconstruction + visible",
        "error per removed patch (grey: visible)",
    ]
    assert "on the 32 removed patches" in fig._suptitle.get_text()
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_the_error_map_keeps_its_scale_and_greys_out_visible_patches(model):
    """Visible patches were drawn white, like the worst errors, and the scale moved with the slider."""

    def error_map(ratio, seed):
        image = explore(model, ExplorerSettings(mask_ratio=ratio, image="builtin:3", seed=seed)).axes[4].images[0]
        return image.get_clim(), image.cmap.get_bad()

    (scale, bad), (other_scale, _) = error_map(0.25, 0), error_map(0.9, 5)
    assert scale == other_scale and scale[0] == 0 and scale[1] > 0
    assert tuple(bad[:3]) == (0.6, 0.6, 0.6)  # grey, not the colour of an error


def test_explore_is_a_pure_function_of_its_settings(model):
    settings = ExplorerSettings(mask_ratio=0.75, image="builtin:3", seed=1)
    a, b = explore(model, settings), explore(model, settings)
    assert a._suptitle.get_text() == b._suptitle.get_text()
    other = explore(model, ExplorerSettings(mask_ratio=0.75, image="builtin:3", seed=2))
    assert other._suptitle.get_text() != a._suptitle.get_text()


def test_normalized_pixel_view(model):
    fig = explore(model, ExplorerSettings(norm_pix_view=True))
    assert titles(fig)[:4] == ["original", "normalized target", "prediction (normalized)", "prediction + visible"]


def test_bad_settings_say_what_to_change(model, tmp_path):
    with pytest.raises(ConfigError, match="grid sampling .* always 75%"):
        explore(model, ExplorerSettings(mask_ratio=0.5, sampling="grid"))
    with pytest.raises(ConfigError, match="keeps no token"):
        explore(model, ExplorerSettings(mask_ratio=0.99))
    with pytest.raises(ConfigError, match="images 0 to 1999"):
        explore(model, ExplorerSettings(image="builtin:5000"))
    with pytest.raises(FileNotFoundError, match="image not found"):
        explore(model, ExplorerSettings(image=str(tmp_path / "missing.jpg")))


def test_the_paper_figure_4(model):
    fig = ratio_figure(model, "builtin:1")
    assert titles(fig)[:3] == [
        "75% removed (16 of 64 kept)",
        "85% removed (9 of 64 kept)",
        "95% removed (3 of 64 kept)",
    ]


def test_the_widget_driven_headlessly(model, tmp_path, capsys):
    explorer = Explorer(model)
    assert explorer.last_settings == ExplorerSettings()
    explorer.ratio.value = 0.5
    assert explorer.last_settings.mask_ratio == 0.5 and "50%" in titles(explorer.last_figure)[1]
    explorer.sampling.value = "grid"  # grid has one ratio: the slider follows
    assert explorer.ratio.value == 0.75 and explorer.last_settings.sampling == "grid"
    explorer.sampling.value = "random"
    explorer.image.value = "photo:coffee"
    explorer.seed.value = 7
    explorer.norm_pix.value = True
    assert explorer.last_settings == ExplorerSettings(0.75, "random", "photo:coffee", 7, True)
    explorer.own_file.value = str(tmp_path / "nope.jpg")  # a bad file: a message, the last figure stays
    assert "image not found" in explorer.last_error and "image not found" in explorer.message.value
    assert explorer.last_settings.image == "photo:coffee"
    assert explorer.image.options == tuple(image_choices())


def test_released_checkpoints_offline(tmp_path, monkeypatch):
    assert set(RELEASED) >= {"mae_visualize_vit_large", "mae_pretrain_vit_base"}
    assert download_command("mae_visualize_vit_large", tmp_path) == (  # into the folder the loader reads
        f"wget -P {tmp_path} https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth"
    )
    with pytest.raises(DataError, match="not there yet; run download_released"):
        load_released("mae_visualize_vit_large", folder=tmp_path)

    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DataError, match="could not download .*wget -P .* https://dl.fbaipublicfiles.com"):
        download_released("mae_visualize_vit_base", folder=tmp_path)
    with pytest.raises(DataError, match="unknown released checkpoint"):
        download_released("mae_vit_gigantic", folder=tmp_path)


def test_a_released_visualize_file_loads_strictly(tmp_path, official_keys):
    """A file in the released layout (built here from the documented key list) loads by name."""
    import argparse

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model("mae_vit_base_patch16").state_dict().items()}
    state = {k: torch.zeros(shapes[k]) for k in official_keys(12, 8)}
    torch.save(
        {"model": state, "args": argparse.Namespace(model="mae_vit_base_patch16")},
        tmp_path / "mae_visualize_vit_base.pth",
    )
    model = load_released("mae_visualize_vit_base", folder=tmp_path)
    assert model.config["name"] == "mae_vit_base_patch16" and torch.equal(model.cls_token, torch.zeros(1, 1, 768))
    with pytest.raises(DataError, match="holds the encoder only"):
        (tmp_path / "mae_pretrain_vit_base.pth").write_bytes(b"")
        load_released("mae_pretrain_vit_base", folder=tmp_path)

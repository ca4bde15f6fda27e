"""Figures: the image grid behind the demo's and the benchmark's example figures."""

import matplotlib.image
import torch

from invprob.plots import image_grid


def _height(path):
    return matplotlib.image.imread(path).shape[0]


def test_a_long_title_on_a_narrow_grid_wraps_onto_extra_lines_instead_of_being_cut(tmp_path):
    rows = [[torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]]
    short = image_grid(rows, ["row"], ["a", "b"], tmp_path / "short.png", title="short")
    long_title = "a title far wider than two image columns, as the benchmark writes for a run of two methods " * 2
    wrapped = image_grid(rows, ["row"], ["a", "b"], tmp_path / "long.png", title=long_title)
    assert _height(wrapped) > _height(short)
    assert matplotlib.image.imread(wrapped).shape[1] == matplotlib.image.imread(short).shape[1]


def test_a_shared_colorbar_fills_the_right_margin_with_the_grey_scale(tmp_path):
    rows = [[torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]]
    plain = matplotlib.image.imread(image_grid(rows, ["row"], ["a", "b"], tmp_path / "plain.png"))
    barred = matplotlib.image.imread(image_grid(rows, ["row"], ["a", "b"], tmp_path / "bar.png", colorbar="value"))
    assert barred.shape[1] > plain.shape[1]
    margin = barred[:, -barred.shape[1] // 6 :, :3].mean(-1)
    mid_grey = (margin > 0.3) & (margin < 0.7)
    assert mid_grey.sum() > 50, "the bar's grey ramp must be drawn in the right margin"

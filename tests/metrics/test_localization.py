"""Localisation metrics (pointing game, energy pointing game, activation precision/sensitivity, boxes)
by hand."""
from __future__ import annotations

import pytest
import torch

from fastcam import metrics


def _mask(*points: tuple[int, int], size: tuple[int, int] = (4, 4)) -> torch.Tensor:
    m = torch.zeros(1, *size, dtype=torch.bool)
    for r, c in points:
        m[0, r, c] = True
    return m


def test_pointing_game_by_hand() -> None:
    peak = torch.zeros(1, 4, 4)
    peak[0, 1, 2] = 1.0
    peak[0, 0, 0] = 0.5
    assert metrics.pointing_game(peak, _mask((1, 2))).item() == 1.0
    assert metrics.pointing_game(peak, _mask((0, 0), (3, 3))).item() == 0.0
    # (3, 2) is 2 px below the peak
    assert metrics.pointing_game(peak, _mask((3, 2)), tolerance=2).item() == 1.0
    assert metrics.pointing_game(peak, _mask((3, 2)), tolerance=1.9).item() == 0.0
    # a map with no positive value points nowhere
    assert metrics.pointing_game(torch.zeros(1, 4, 4), _mask((0, 0))).item() == 0.0
    # batched, masks as 0/1 floats
    maps = torch.cat([peak, peak.flip(-1)])
    masks = torch.cat([_mask((1, 2)), _mask((1, 2))]).float()
    torch.testing.assert_close(metrics.pointing_game(maps, masks), torch.tensor([1.0, 0.0]))


def test_localisation_upsamples_low_resolution_maps() -> None:
    lowres = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])      # peak in the top-right quadrant
    assert metrics.pointing_game(lowres, _mask((0, 3))).item() == 1.0
    assert metrics.pointing_game(lowres, _mask((3, 0))).item() == 0.0


def test_energy_pointing_game_by_hand() -> None:
    maps = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 3.0, -5.0], [4.0, 0.0, 0.0]]], dtype=torch.float64)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True                   # box = rows 0..1, cols 0..1
    total = 1 + 2 + 3 + 4                                  # negative energy is ignored
    assert metrics.energy_pointing_game(maps, mask).item() == pytest.approx((1 + 2 + 0 + 3) / total)
    assert metrics.energy_pointing_game(maps, mask, box=False).item() == pytest.approx((1 + 3) / total)
    assert metrics.energy_pointing_game(torch.zeros(1, 3, 3), mask).item() == 0.0


def test_bounding_boxes() -> None:
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1, 4] = m[0, 3, 2] = True
    m[1, 0, 0] = True
    box = metrics.bounding_boxes(m)
    expected = torch.zeros(2, 5, 6, dtype=torch.bool)
    expected[0, 1:4, 2:5] = True
    expected[1, 0, 0] = True
    assert torch.equal(box, expected)


def test_activation_precision_and_sensitivity_by_hand() -> None:
    maps = torch.tensor([[[1.0, 0.5], [0.0, -1.0]]])       # S = [[1, .5], [0, 0]]
    mask = torch.tensor([[[1, 0], [1, 0]]])
    assert metrics.activation_precision(maps, mask).item() == pytest.approx(1 / 1.5)
    assert metrics.activation_sensitivity(maps, mask).item() == pytest.approx(1 / 2)
    # S is scaled to [0, 1] by its max: the metrics do not depend on the map's scale
    assert metrics.activation_sensitivity(3 * maps, mask).item() == pytest.approx(1 / 2)
    assert metrics.activation_precision(-maps.abs(), mask).item() == 0.0


def test_localisation_bad_input() -> None:
    with pytest.raises(ValueError, match=r"masks of images \[1\] are empty"):
        metrics.pointing_game(torch.rand(2, 4, 4), torch.cat([_mask((0, 0)), _mask()]))
    with pytest.raises(ValueError, match="got 1 masks for 2 maps"):
        metrics.activation_precision(torch.rand(2, 4, 4), _mask((0, 0)))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(torch.rand(1, 4, 4), _mask((0, 0)), tolerance=-1)

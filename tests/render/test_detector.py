"""Detector model: noise statistics, blur, seeding, output formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.imaging import beer_lambert, detect, negative_log, to_uint16
from stereodrr.physics import focal_spot_sigma_px, gaussian_blur


@pytest.mark.parametrize("photons", [20.0, 100.0, 1e4])
def test_flat_field_poisson_statistics(photons):
    L = torch.full((512, 512), 0.7, dtype=torch.float64)
    counts = detect(L, photons, seed=3)
    expected = photons * np.exp(-0.7)
    mean, var = float(counts.mean()), float(counts.var())
    assert abs(mean / expected - 1) <= 5e-3
    assert abs(var / mean - 1) <= 0.05


def test_seeded_and_electronic_noise():
    L = torch.zeros(256, 256)
    a, b = detect(L, 100.0, electronic_sigma=3.0, seed=7), detect(L, 100.0, electronic_sigma=3.0, seed=7)
    assert torch.equal(a, b) and not torch.equal(a, detect(L, 100.0, electronic_sigma=3.0, seed=8))
    # Poisson and read-out noise are independent: variances add.
    assert float(a.var()) == pytest.approx(100.0 + 9.0, rel=0.03)


def test_blur_keeps_flat_fields_and_spreads_a_point():
    flat = torch.full((1, 40, 50), 2.5, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(flat, 1.7), flat)
    point = torch.zeros(61, 61, dtype=torch.float64)
    point[30, 30] = 1.0
    out = gaussian_blur(point, 2.0)
    v, u = np.mgrid[0:61, 0:61]
    o = out.numpy()
    assert o.sum() == pytest.approx(1.0, abs=1e-9)
    assert (o * (u - 30) ** 2).sum() == pytest.approx(4.0, rel=1e-3)


def test_focal_spot_magnification():
    # 1 mm focal spot (FWHM), object halfway: blur FWHM 1 mm on the detector = 5 px at 0.2 mm.
    assert focal_spot_sigma_px(1.0, 1000.0, 500.0, 0.2) == pytest.approx(5.0 / 2.3548200450309493)
    with pytest.raises(ValueError):
        focal_spot_sigma_px(1.0, 1000.0, 1200.0, 0.2)


def test_negative_log_inverts_beer_lambert_and_uint16():
    L = torch.linspace(0, 4, 100).reshape(10, 10)
    assert torch.allclose(negative_log(beer_lambert(L, 1e4), 1e4), L, atol=1e-5)
    assert torch.isfinite(negative_log(torch.zeros(3), 100.0)).all()
    img16, scale = to_uint16(L)
    assert img16.dtype == np.uint16 and img16.max() == 65535
    assert np.allclose(img16 / scale, L.numpy(), atol=1 / scale)
    with pytest.raises(ValueError, match="NaN"):
        to_uint16(np.array([np.nan]))


def test_poisson_counts_beyond_a_32_bit_draw_come_from_the_normal_approximation():
    """Off the CPU, means above the exact bound are drawn as N(rate, rate) (CUDA's Poisson draw
    is a 32-bit count: a mean of 5e9 would wrap); on the CPU the draw is torch.poisson's, bit for
    bit. Here the bound is lowered to exercise that branch on the CPU."""
    from stereodrr.imaging.detector import _poisson_draw

    n = 20000
    rate = torch.cat([torch.full((n,), 50.0), torch.full((n,), 5e9)]).double()
    assert torch.equal(_poisson_draw(rate, torch.Generator().manual_seed(0)),
                       torch.poisson(rate, generator=torch.Generator().manual_seed(0)))
    counts = _poisson_draw(rate, torch.Generator().manual_seed(1), exact_max=1e9)
    small, big = counts[:n], counts[n:]
    assert torch.equal(small, small.round()) and abs(float(small.mean()) - 50.0) < 0.3
    assert abs(float(small.var()) / 50.0 - 1.0) < 0.05
    assert float(big.min()) > 2.0**32  # beyond what a 32-bit count holds
    assert abs(float(big.mean()) - 5e9) < 5 * (5e9 / n) ** 0.5
    assert abs(float(big.std()) / 5e9**0.5 - 1.0) < 0.03

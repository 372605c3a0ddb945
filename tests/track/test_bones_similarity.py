"""The similarities bone tracking added to the registry: Sobel-magnitude NCC over the rendered
bone (``sncc``) and band-passed NCC (``bpncc``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.registration import SIMILARITIES, get_similarity
from stereodrr.registration.similarity import bandpass_ncc, gaussian_blur, sobel_ncc


def _bone(h: int = 40, w: int = 36, shift: float = 0.0) -> torch.Tensor:
    """A bright rod with a cortex-like rim on a dark background, ``(1, H, W)`` float64."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    r = (xx - 0.5 * w - shift).abs()
    rod = torch.clamp(1 - (r / 7) ** 2, min=0).sqrt() * (1 + 0.5 * torch.exp(-((r - 5.5) / 1.2) ** 2))
    return (rod * (1 + 0.2 * torch.sin(yy / 5)))[None]


@pytest.mark.parametrize("name", ["sncc", "bpncc"])
def test_registered_and_one_for_identical_images(name):
    assert name in SIMILARITIES
    x = _bone()
    sim = get_similarity(name)
    assert float(sim(x, x)) == pytest.approx(1.0, abs=1e-5)  # up to the variance floor
    # Invariant to a positive gain and offset of the target; lower for a shifted bone.
    assert float(sim(x, 3.0 * x + 0.7)) == pytest.approx(1.0, abs=1e-6)
    assert float(sim(_bone(shift=3.0), x)) < 0.9


def test_sobel_ncc_only_counts_the_rendered_support():
    x = torch.zeros(1, 30, 30, dtype=torch.float64)
    x[:, 10:20, 10:20] = 1.0
    y = x.clone()
    y[:, 0:4, 0:30] = torch.rand(1, 4, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # Clutter away from the rendered bone does not count; with support=None it does.
    assert float(sobel_ncc(x, y)) == pytest.approx(1.0, abs=1e-5)
    assert float(sobel_ncc(x, y, support=None)) < 0.99


def test_bandpass_ncc_ignores_a_smooth_background():
    x = _bone()
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    y = x + 2.0 * torch.exp(-(((xx - 5) / 40) ** 2 + ((yy - 10) / 50) ** 2))[None]  # soft tissue
    assert float(bandpass_ncc(x, y, sigma_high=4.0)) > 0.98
    from stereodrr.registration.similarity import ncc
    assert float(ncc(x, y)) < 0.9


def test_gaussian_blur_with_a_mask_does_not_bleed():
    x = torch.ones(1, 20, 20, dtype=torch.float64)
    x[:, :, :10] = 100.0  # a bright region under weight 0
    m = torch.ones_like(x)
    m[:, :, :10] = 0
    b = gaussian_blur(x, 2.0, m)
    assert torch.allclose(b[:, :, 10:], torch.ones_like(b[:, :, 10:]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sobel_derivatives_are_scipys_correlation_with_the_sobel_kernel(dtype):
    """The Sobel derivatives that ``gncc`` and ``sncc`` compare (separable shifted slices)
    against SciPy's 2D correlation with the 3 x 3 kernel, on the valid part; gradients by
    finite differences (float64)."""
    from scipy.ndimage import correlate

    from stereodrr.registration.similarity import _sobel

    x = torch.rand(2, 23, 19, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    k = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    du, dv = _sobel(x.to(dtype))
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    for got, kernel in ((du, k), (dv, k.T)):
        want = np.stack([correlate(img, kernel)[1:-1, 1:-1] for img in x.numpy()])
        np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=tol)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda v: torch.stack(_sobel(v)), (x[:1, :7, :6].clone().requires_grad_(True),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [0.6, 2.0, 9.5])
def test_gaussian_blur_is_scipys_truncated_gaussian_with_its_exact_gradient(dtype, sigma):
    """The blur (taps as shifted slices, not conv2d) against SciPy's separable filter of the
    same kernel (``ceil(3 sigma)`` taps a side, normalised, edges replicated: mode "nearest"),
    and its backward pass against the adjoint that SciPy's filter gives (the transposed
    correlation is the correlation with the mirrored kernel, edges folded back)."""
    from scipy.ndimage import correlate1d

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 37, 29, generator=g, dtype=torch.float64)
    r = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    want = correlate1d(correlate1d(x.numpy(), k, axis=-1, mode="nearest"), k, axis=-2, mode="nearest")
    xt = x.to(dtype).requires_grad_(True)
    got = gaussian_blur(xt, sigma)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(got.detach().double().numpy(), want, rtol=tol, atol=tol)
    # d/dx sum(w * blur(x)) = blur^T(w): a probe per pixel through SciPy's (linear) filter
    w = torch.rand(2, 37, 29, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((got * w.to(dtype)).sum(), xt)
    probe = np.zeros((37, 29))
    adjoint = np.zeros((2, 37, 29))
    for i in range(37):
        for j in range(29):
            probe[i, j] = 1.0
            resp = correlate1d(correlate1d(probe, k, axis=-1, mode="nearest"), k, axis=-2, mode="nearest")
            adjoint[:, i, j] = (resp[None] * w.numpy()).sum((-2, -1))
            probe[i, j] = 0.0
    np.testing.assert_allclose(grad.double().numpy(), adjoint, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("fn", [
    lambda x, y, m: sobel_ncc(x, y, m),
    lambda x, y, m: sobel_ncc(x, y, m, support=None),
    lambda x, y, m: bandpass_ncc(x, y, m, sigma_low=0.8, sigma_high=3.0),
])
def test_gradients_match_finite_differences(fn):
    g = torch.Generator().manual_seed(4)
    x = (_bone(16, 14) + 0.05 * torch.rand(1, 16, 14, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    y = _bone(16, 14, shift=1.0) + 0.05 * torch.rand(1, 16, 14, generator=g, dtype=torch.float64)
    m = torch.ones(1, 16, 14, dtype=torch.float64)
    m[:, :2] = 0
    assert torch.autograd.gradcheck(lambda v: fn(v, y, m), (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: sobel_ncc(torch.ones(1, 2, 5), torch.ones(1, 2, 5)), "H, W >= 3"),
    (lambda: sobel_ncc(_bone(), _bone(), grow=-1), "grow"),
    (lambda: bandpass_ncc(_bone(), _bone(), sigma_low=4.0, sigma_high=2.0), "sigma_low"),
    (lambda: bandpass_ncc(_bone(), _bone()[:, :-1]), "one shape"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_identical_after_no_contrast_target_gives_no_nan():
    x = _bone()
    flat = torch.full_like(x, 0.3)
    for name in ("sncc", "bpncc"):
        assert np.isfinite(float(get_similarity(name)(x, flat)))
        assert np.isfinite(float(get_similarity(name)(flat, x)))

import numpy as np
import pytest
import torch

from stereodrr.registration import check_target, gradient_ncc, multiscale_ncc, ncc, patch_ncc


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 40, 48, generator=g, dtype=torch.float64), 3, 1, 1)[:, 0]
    return base, torch.rand(2, 40, 48, generator=g, dtype=torch.float64)


def test_ncc_matches_weighted_pearson(images):
    x, y = images
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.3).double()
    got = ncc(x, y, mask)
    for b in range(2):
        sel = mask[b] > 0
        expected = np.corrcoef(x[b][sel].numpy(), y[b][sel].numpy())[0, 1]
        assert float(got[b]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("measure", [ncc, gradient_ncc, lambda a, b, m=None: patch_ncc(a, b, m, 8), multiscale_ncc])
def test_affine_invariance_and_sign(images, measure):
    x, _ = images
    np.testing.assert_allclose(measure(3.0 * x + 7.0, x).numpy(), 1.0, atol=1e-4)
    np.testing.assert_allclose(measure(-x, x).numpy(), -1.0, atol=1e-4)


def test_constant_rendering_gives_zero_not_nan(images):
    x, y = images
    flat = torch.zeros_like(x, requires_grad=True)
    for measure in (ncc, gradient_ncc, multiscale_ncc):
        s = measure(flat, y)
        assert torch.isfinite(s).all() and float(s.detach().abs().max()) < 1e-6
        s.sum().backward()
        assert torch.isfinite(flat.grad).all()
        flat.grad = None


def test_bad_targets(images):
    x, _ = images
    with pytest.raises(ValueError, match="'left' is constant"):
        check_target(torch.full((8, 8), 2.0), "left")
    img = x[0].clone()
    img[3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_target(img, "right")
    for bad in (float("nan"), float("inf"), -1.0):  # a NaN weight made every loss NaN: "diverged", exit 3
        mask = torch.ones_like(x[0])
        mask[3, 4] = bad
        with pytest.raises(ValueError, match="mask of 'left': expected finite, non-negative weights"):
            check_target(x[0], "left", mask)
    with pytest.raises(ValueError, match="mask"):
        ncc(x, x, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="patch"):
        patch_ncc(x, x, patch=100)


def test_count_weighted_ncc_is_the_weighted_least_squares_fit():
    # min_{a,b} sum w (y - a x - b)^2 = S_yy (1 - NCC_w^2) with w = exp(-y) (the counts of a -log image).
    from stereodrr.registration import count_weighted_ncc, get_similarity

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 4, size=(2, 12, 10))
    y = 0.8 * x + 0.3 + rng.normal(0, 0.2, size=x.shape)
    r = count_weighted_ncc(torch.as_tensor(x), torch.as_tensor(y), smooth=1, eps=0.0).numpy()
    for v in range(2):
        w = np.exp(-y[v]).ravel()
        A = np.stack([x[v].ravel(), np.ones(x[v].size)], 1) * np.sqrt(w)[:, None]
        _, res, _, _ = np.linalg.lstsq(A, y[v].ravel() * np.sqrt(w), rcond=None)
        ym = (w * y[v].ravel()).sum() / w.sum()
        syy = (w * (y[v].ravel() - ym) ** 2).sum()
        assert res[0] == pytest.approx(syy * (1 - r[v] ** 2), rel=1e-6)
    assert get_similarity("wncc") is count_weighted_ncc
    # Invariant to the scale of the counts and to an affine change of the DRR.
    r2 = count_weighted_ncc(torch.as_tensor(3 * x - 1), torch.as_tensor(y), smooth=1, eps=0.0).numpy()
    np.testing.assert_allclose(r, r2, rtol=1e-9)
    with pytest.raises(ValueError, match="smooth"):
        count_weighted_ncc(torch.as_tensor(x), torch.as_tensor(y), smooth=4)

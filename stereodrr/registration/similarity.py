"""Image similarity for 2D/3D registration: NCC, gradient NCC, multiscale patch NCC, NCC weighted
by the expected photon counts, and for bone-only CTs against real radiographs the NCC of Sobel
magnitudes over the bone (Autoscoper's) and of band-passed images.

Every measure compares a batch of rendered (moving) images with target (fixed) images, one pair
per view, optionally weighted by a mask per view, and returns one similarity per view in
``[-1, 1]`` (1 = identical up to a positive affine change of intensity). The registration loss
of a view is ``1 - similarity``; the loss of a pose is the sum over views.

NCC is undefined for a constant image. A target that is constant (under its mask) is refused by
:func:`check_target`; a rendered image that is (locally) constant, e.g. a view that misses the
volume or a patch of air, gets similarity 0 (no information) through a variance floor of
``eps`` times the image's mean square, never a NaN.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ncc", "gradient_ncc", "patch_ncc", "multiscale_ncc", "count_weighted_ncc", "sobel_ncc", "bandpass_ncc",
           "gaussian_blur", "SIMILARITIES", "SimilarityName", "get_similarity", "check_target"]

_EPS = 1e-6

Similarity = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def _weights(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones_like(x)
    if mask.shape != x.shape:
        raise ValueError(f"mask: expected shape {tuple(x.shape)} (views, H, W), got {tuple(mask.shape)}")
    return mask.to(x.dtype)


def _ncc_from_moments(mx: Tensor, my: Tensor, mxx: Tensor, myy: Tensor, mxy: Tensor,
                      floor_x: Tensor, floor_y: Tensor) -> Tensor:
    """``cov / sqrt((var_x + f_x)(var_y + f_y))`` from weighted first and second moments."""
    var_x = (mxx - mx * mx).clamp_min(0.0)
    var_y = (myy - my * my).clamp_min(0.0)
    cov = mxy - mx * my
    return cov / torch.sqrt((var_x + floor_x) * (var_y + floor_y))


def _floor(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """Per-image variance floor ``eps * mean(w x^2)`` (+ a tiny absolute term for all-zero images)."""
    ms = (w * x * x).sum((-2, -1)) / w.sum((-2, -1)).clamp_min(1e-12)
    return (eps * ms + 1e-30).detach()


def ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None, eps: float = _EPS) -> Tensor:
    """Normalised cross-correlation per view, weighted by ``mask``.

    ``NCC = sum w (x - mx)(y - my) / sqrt(sum w (x - mx)^2 * sum w (y - my)^2)``, with
    ``mx, my`` the weighted means.

    Args:
        moving: ``(B, H, W)`` rendered images.
        fixed: ``(B, H, W)`` targets.
        mask: ``(B, H, W)`` non-negative weights, or None for all pixels.
        eps: relative variance floor (see the module docstring).

    Returns:
        ``(B,)`` similarities in ``[-1, 1]``.
    """
    if moving.shape != fixed.shape or moving.ndim != 3:
        raise ValueError(f"images: expected two (views, H, W) batches of one shape, got {tuple(moving.shape)} "
                         f"and {tuple(fixed.shape)}")
    w = _weights(moving, mask)
    sw = w.sum((-2, -1)).clamp_min(1e-12)

    def mean(v: Tensor) -> Tensor:
        return (w * v).sum((-2, -1)) / sw

    # Centre first: second moments of centred data lose no precision in float32.
    x = moving - mean(moving)[:, None, None]
    y = fixed - mean(fixed)[:, None, None]
    zero = torch.zeros_like(sw)
    return _ncc_from_moments(zero, zero, mean(x * x), mean(y * y), mean(x * y),
                             _floor(x, w, eps), _floor(y, w, eps))


class _Correlate(torch.autograd.Function):
    """``out[j] = sum_i k_i v[j + i]`` along ``dim`` (the valid part; conv2d's cross-correlation
    with a one-dimensional kernel), as one multiply-add of a shifted slice per nonzero tap. conv2d takes
    an im2col + GEMM path for float64 on CPU: 13 ms for one pass of a 49-tap kernel over the
    two ~270 x 210 views of a tracked frame, against 1 ms here (float32: the same bits as conv2d,
    measured; float64 within 1e-14). No gradient for the kernel."""

    @staticmethod
    def forward(ctx, v: Tensor, taps: tuple[float, ...], dim: int) -> Tensor:
        n = v.shape[dim] - len(taps) + 1
        out = v.narrow(dim, 0, n) * taps[0]
        for i in range(1, len(taps)):
            if taps[i]:
                out.add_(v.narrow(dim, i, n), alpha=taps[i])
        ctx.taps, ctx.dim, ctx.size = taps, dim, v.shape[dim]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        shape = list(grad.shape)
        shape[ctx.dim] = ctx.size
        g = grad.new_zeros(shape)
        n = grad.shape[ctx.dim]
        for i, tap in enumerate(ctx.taps):
            if tap:
                g.narrow(ctx.dim, i, n).add_(grad, alpha=tap)
        return g, None, None


# the Sobel kernel [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] / 8, separable: a difference along, a
# smoothing across
_SOBEL_DIFF, _SOBEL_SMOOTH = (-0.5, 0.0, 0.5), (0.25, 0.5, 0.25)


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel derivatives ``(d/du, d/dv)`` of ``(B, H, W)`` images, valid part ``(B, H-2, W-2)``
    (separable, :class:`_Correlate`: conv2d's float64 path on CPU is the slow one)."""
    du = _Correlate.apply(_Correlate.apply(x, _SOBEL_DIFF, -1), _SOBEL_SMOOTH, -2)
    dv = _Correlate.apply(_Correlate.apply(x, _SOBEL_SMOOTH, -1), _SOBEL_DIFF, -2)
    return du, dv


def gradient_ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None, eps: float = _EPS) -> Tensor:
    """Gradient correlation: mean of the NCCs of the horizontal and vertical Sobel derivatives.

    ``GC = (NCC(dx/du, dy/du) + NCC(dx/dv, dy/dv)) / 2`` (Penney et al. 1998); insensitive to
    smooth intensity differences (scatter, soft tissue), sensitive to edges.

    Args and returns as :func:`ncc` (images need ``H, W >= 3``).
    """
    if moving.ndim != 3 or min(moving.shape[-2:]) < 3:
        raise ValueError(f"images: gradient NCC needs (views, H, W) with H, W >= 3, got {tuple(moving.shape)}")
    mu, mv = _sobel(moving)
    fu, fv = _sobel(fixed)
    # A derivative is valid where its whole 3x3 neighbourhood is inside the mask.
    m = None if mask is None else -F.max_pool2d(-_weights(moving, mask)[:, None], 3, stride=1)[:, 0]
    return 0.5 * (ncc(mu, fu, m, eps) + ncc(mv, fv, m, eps))


def patch_ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None, patch: int = 9,
              flat: float = 1e-3) -> Tensor:
    """Mean NCC over non-overlapping ``patch x patch`` tiles (local NCC).

    Each tile gets its own means and variances, so the measure follows local contrast. Only
    tiles where the *target* has structure count: tiles with no mask weight or with a target
    variance below ``flat`` times the target's global variance (air, flat tissue) are left out.
    The choice depends on the target alone, so it does not move the optimum; tiles that are
    flat in the rendered image only contribute about 0. Images are standardised first (NCC is
    invariant to it) so that the moments are accurate in float32.

    Args:
        moving, fixed, mask: as :func:`ncc`.
        patch: tile size in pixels (a partial last row/column of tiles is dropped).
        flat: relative target variance below which a tile is left out.

    Returns:
        ``(B,)`` (0 for a view without any structured tile).
    """
    if moving.shape != fixed.shape or moving.ndim != 3:
        raise ValueError(f"images: expected two (views, H, W) batches of one shape, got {tuple(moving.shape)} "
                         f"and {tuple(fixed.shape)}")
    if int(patch) != patch or patch < 2 or patch > min(moving.shape[-2:]):
        raise ValueError(f"patch: expected an integer 2..{min(moving.shape[-2:])} pixels, got {patch}")
    w = _weights(moving, mask)

    def standardise(v: Tensor) -> Tensor:
        sw = w.sum((-2, -1), keepdim=True).clamp_min(1e-12)
        m = (w * v).sum((-2, -1), keepdim=True) / sw
        s = torch.sqrt(((w * (v - m) ** 2).sum((-2, -1), keepdim=True) / sw).detach() + 1e-30)
        return (v - m) / s

    x, y = standardise(moving), standardise(fixed)

    def pool(v: Tensor) -> Tensor:
        return F.avg_pool2d(v[:, None], patch, stride=patch)[:, 0]

    pw = pool(w)
    den = pw.clamp_min(1e-12)

    def local(v: Tensor) -> Tensor:
        return pool(w * v) / den

    my, myy = local(y), local(y * y)
    # Standardised images have unit global variance, so these thresholds are relative.
    valid = (pw > 0) & (myy - my * my > flat)
    floor = torch.full_like(pw, _EPS)
    tiles = _ncc_from_moments(local(x), my, local(x * x), myy, local(x * y), floor, floor)
    tiles = torch.where(valid, tiles, torch.zeros_like(tiles))
    return tiles.sum((-2, -1)) / valid.sum((-2, -1)).clamp_min(1)


def multiscale_ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None,
                   patch_sizes: Sequence[int | None] = (None, 13), weights: Sequence[float] = (0.5, 0.5),
                   eps: float = _EPS) -> Tensor:
    """Weighted sum of global NCC (``None``) and patch NCCs at several tile sizes.

    ``S = sum_k w_k NCC_{p_k}``: the global term gives a wide basin, the patch terms sharpen
    the optimum on local structure. Patch sizes larger than the image are skipped (their weight
    goes to the global term), so the same measure works on every pyramid level.

    Args:
        moving, fixed, mask: as :func:`ncc`.
        patch_sizes: tile sizes in pixels; ``None`` for the whole image.
        weights: one per patch size, summing to 1.

    Returns:
        ``(B,)``.
    """
    if len(patch_sizes) != len(weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights: expected one weight per patch size summing to 1, got {list(weights)} "
                         f"for {list(patch_sizes)}")
    total = torch.zeros(moving.shape[0], dtype=moving.dtype, device=moving.device)
    global_weight = 0.0
    for p, wk in zip(patch_sizes, weights):
        if p is None or p > min(moving.shape[-2:]) // 2:
            global_weight += wk
        else:
            total = total + wk * patch_ncc(moving, fixed, mask, p)
    if global_weight:
        total = total + global_weight * ncc(moving, fixed, mask, eps)
    return total


def count_weighted_ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None, smooth: int = 5,
                       eps: float = _EPS) -> Tensor:
    """NCC weighted by the expected photon counts: efficient under quantum noise.

    A line-integral image ``y = -log(N / N0)`` of Poisson counts ``N`` has the variance
    ``exp(y) / N0`` per pixel, so the maximum-likelihood fit of a DRR ``x`` up to the unknown
    intensity scale and offset of the X-ray, ``y ~ a x + b``, minimises
    ``sum w (y - a x - b)^2`` with ``w = exp(-y) N0`` (the counts). Profiling ``a, b`` out leaves
    ``sum w (y - y_w)^2 (1 - NCC_w^2)``: the NCC weighted by the counts, which this returns. The
    weights are taken from the target smoothed over ``smooth x smooth`` pixels (the noise of a
    single pixel's weight would correlate with its residual and bias the fit), times ``mask``;
    their scale ``N0`` cancels. Expects line integrals in natural units (``-log`` of counts).

    Args and returns as :func:`ncc`; smooth: odd box size in pixels (1 = none).
    """
    if moving.shape != fixed.shape or moving.ndim != 3:
        raise ValueError(f"images: expected two (views, H, W) batches of one shape, got {tuple(moving.shape)} "
                         f"and {tuple(fixed.shape)}")
    if int(smooth) != smooth or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth: expected an odd positive number of pixels, got {smooth}")
    y = fixed.detach()
    if smooth > 1:
        y = F.avg_pool2d(y[:, None], smooth, stride=1, padding=smooth // 2, count_include_pad=False)[:, 0]
    # Relative to each view's least attenuated pixel: the weights stay in (0, 1] in float32.
    w = torch.exp(-(y - y.amin((-2, -1), keepdim=True)))
    if mask is not None:
        w = w * _weights(moving, mask)
    return ncc(moving, fixed, w, eps)


def sobel_ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None, support: float | None = 1e-3,
              grow: int = 1, eps: float = _EPS) -> Tensor:
    """NCC of the Sobel gradient magnitudes over the pixels the rendered bone covers (Autoscoper's measure).

    ``S = NCC_w(|grad x|, |grad y|)`` with ``w`` = ``mask`` times the rendered image's support
    (``x > support * max x``) grown by ``grow`` pixels, so that the outline's edge counts. Edges
    only, and only where the volume projects: neither the smooth soft tissue, which a bone-only
    CT lacks, nor the structures around the bone weigh in; the magnitude ignores whether an edge
    rises or falls, so a neighbouring bone that overlaps the outline does not reverse it. The
    support is a weight (no gradient flows through it); ``|g| = sqrt(g_u^2 + g_v^2 + d)`` with a
    tiny ``d`` (relative to the image's mean square gradient) keeps the gradient finite where an
    image is flat.

    Args and returns as :func:`ncc` (images need ``H, W >= 3``); support: relative threshold of
    the rendered image's support; grow: pixels the support is grown by.
    """
    if moving.shape != fixed.shape or moving.ndim != 3 or min(moving.shape[-2:]) < 3:
        raise ValueError(f"images: Sobel NCC needs two (views, H, W) batches of one shape with H, W >= 3, got "
                         f"{tuple(moving.shape)} and {tuple(fixed.shape)}")
    if int(grow) != grow or grow < 0:
        raise ValueError(f"grow: expected a non-negative number of pixels, got {grow}")

    def magnitude(x: Tensor) -> Tensor:
        gu, gv = _sobel(x)
        g2 = gu * gu + gv * gv
        return torch.sqrt(g2 + 1e-12 * g2.mean((-2, -1), keepdim=True).detach() + 1e-30)

    with torch.no_grad():
        if support is None:
            on = torch.ones_like(moving)
        else:
            on = (moving > support * moving.amax((-2, -1), keepdim=True).clamp_min(0)).to(moving.dtype)
        if grow:
            on = F.max_pool2d(on[:, None], 2 * grow + 1, stride=1, padding=grow)[:, 0]
        w = on[:, 1:-1, 1:-1]
        if mask is not None:  # a derivative is valid where its 3x3 neighbourhood is inside the mask
            w = w * -F.max_pool2d(-_weights(moving, mask)[:, None], 3, stride=1)[:, 0]
    return ncc(magnitude(moving), magnitude(fixed), w, eps)


def gaussian_blur(x: Tensor, sigma: float, mask: Tensor | None = None) -> Tensor:
    """Separable Gaussian blur (truncated at 3 sigma, edges replicated) of ``(B, H, W)`` images;
    with ``mask``, the normalised blur ``G(m x) / G(m)`` (pixels of weight 0 do not bleed in;
    0 where no weight is near)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3.0 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    taps = tuple((k / k.sum()).tolist())  # Python floats: exact in x's dtype

    def blur(v: Tensor) -> Tensor:
        v = _Correlate.apply(F.pad(v[:, None], (r, r, 0, 0), mode="replicate"), taps, -1)
        return _Correlate.apply(F.pad(v, (0, 0, r, r), mode="replicate"), taps, -2)[:, 0]

    if mask is None:
        return blur(x)
    m = mask.to(x.dtype)
    return blur(m * x) / blur(m).clamp_min(1e-6)


def bandpass_ncc(moving: Tensor, fixed: Tensor, mask: Tensor | None = None, sigma_low: float = 1.0,
                 sigma_high: float = 8.0, eps: float = _EPS) -> Tensor:
    """NCC of band-passed images: ``NCC_w(B x, B y)`` with ``B v = G_low v - G_high v`` (a
    difference of Gaussians, sigmas in pixels of the images given).

    The high cut removes what varies slowly, the soft tissue a bone-only CT lacks; the low cut
    the pixel noise. Unlike edge measures it keeps the bone's projected density (how thick the
    cortex is where, which way the bone turns about its long axis). The target is blurred
    within its mask (pixels of weight 0, outside the field, do not bleed in).

    Args and returns as :func:`ncc`; sigma_low, sigma_high: the Gaussians' sigmas in pixels.
    """
    if moving.shape != fixed.shape or moving.ndim != 3:
        raise ValueError(f"images: expected two (views, H, W) batches of one shape, got {tuple(moving.shape)} "
                         f"and {tuple(fixed.shape)}")
    if not 0 <= sigma_low < sigma_high:
        raise ValueError(f"sigma_low, sigma_high: expected 0 <= sigma_low < sigma_high pixels, got {sigma_low}, "
                         f"{sigma_high}")
    m = None if mask is None else _weights(moving, mask)
    x = gaussian_blur(moving, sigma_low) - gaussian_blur(moving, sigma_high)
    return ncc(x, _bandpassed_target(fixed, m, sigma_low, sigma_high), m, eps)


# A registration compares every rendered image with the same target: its band-pass (two thirds of
# the measure's cost) is kept for the last few (target, mask, sigmas), keyed by storage, version
# and sums so that a tensor reusing freed memory does not hit.
_BANDPASSED: OrderedDict[tuple, Tensor] = OrderedDict()


def _bandpassed_target(fixed: Tensor, mask: Tensor | None, sigma_low: float, sigma_high: float) -> Tensor:
    def band() -> Tensor:
        return gaussian_blur(fixed, sigma_low, mask) - gaussian_blur(fixed, sigma_high, mask)

    if fixed.requires_grad or (mask is not None and mask.requires_grad):
        return band()
    key = (fixed.data_ptr(), fixed._version, tuple(fixed.shape), fixed.dtype, fixed.device, float(fixed.sum()),
           None if mask is None else (mask.data_ptr(), mask._version, float(mask.sum())), sigma_low, sigma_high)
    if key not in _BANDPASSED:
        _BANDPASSED[key] = band()
        while len(_BANDPASSED) > 4:
            _BANDPASSED.popitem(last=False)
    return _BANDPASSED[key]


SimilarityName = Literal["ncc", "gncc", "mncc", "wncc", "sncc", "bpncc"]
"""The built-in similarities; one added to :data:`SIMILARITIES` is chosen by its name all the same."""

SIMILARITIES: dict[str, Similarity] = {"ncc": ncc, "gncc": gradient_ncc, "mncc": multiscale_ncc,
                                       "wncc": count_weighted_ncc, "sncc": sobel_ncc, "bpncc": bandpass_ncc}
"""Similarity measures by name (``similarity=``, ``--similarity``)."""


def get_similarity(name: str) -> Similarity:
    """The measure called ``name``: ``"ncc"``, ``"gncc"`` (gradient NCC), ``"mncc"`` (multiscale),
    ``"wncc"`` (weighted by the expected counts), ``"sncc"`` (Sobel magnitudes where the volume
    projects) or ``"bpncc"`` (band-passed images)."""
    if name not in SIMILARITIES:
        raise ValueError(f"similarity: expected one of {sorted(SIMILARITIES)}, got {name!r}")
    return SIMILARITIES[name]


def check_target(image: Tensor, name: str, mask: Tensor | None = None) -> None:
    """Refuse a target NCC cannot use: NaN/inf pixels, a mask with NaN/inf or negative weights
    (a NaN weight makes every loss NaN: the registration "diverged" at its first iteration), or
    no contrast under the mask.

    Args:
        image: ``(H, W)``.
        name: the view, for the message.
        mask: ``(H, W)`` weights or None.

    Raises:
        ValueError: naming the view and what is wrong.
    """
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"image {name!r}: {int((~torch.isfinite(image)).sum())} pixel(s) are NaN or inf")
    w = torch.ones_like(image) if mask is None else mask.to(image.dtype)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"mask of {name!r}: expected finite, non-negative weights with a positive sum")
    sel = image[w > 0]
    spread = float(sel.max() - sel.min())
    if not spread > 1e-6 * max(float(sel.abs().max()), 1e-30):
        raise ValueError(
            f"image {name!r} is constant (value {float(sel[0]):.6g} everywhere{' under its mask' if mask is not None else ''}): "
            "NCC is undefined for an image without contrast; expected an X-ray line-integral image"
        )

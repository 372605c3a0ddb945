"""The spectrum sum of a polychromatic image, from per-material line integrals.

For a spectrum ``S(E)``, a detector response ``eps(E) = eta(E) E`` (the energy deposited per
incident photon) and per-material line integrals ``L_m = integral rho_m ds`` (g/cm^3 mm)::

    I(u, v) = sum_E S(E) eps(E) exp(-sum_m (mu/rho)_m(E) L_m(u, v) / 10)
    t(u, v) = I / I_open,   I_open = sum_E S(E) eps(E)                               (1)

and its quantum variance factor ``q = sum_E S eps E e^{-mu L} / (sum_E S eps)^2 * sum_E S`` (a
photon is absorbed with probability ``eta`` and deposits ``E``: compound Poisson).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["spectral_sums", "t_sq_over_q"]


def spectral_sums(channels: Float[Tensor, "M H W"], att: Float[Tensor, "M K"],
                  weights: Float[Tensor, "J K"]) -> Float[Tensor, "J H W"]:
    """Weighted spectrum sums ``sum_k w_jk exp(-sum_m att_mk L_m)`` of equation (1).

    Args:
        channels: ``(M, H, W)`` line integrals ``L_m``.
        att: ``(M, K)`` ``(mu/rho)_m(E_k) / 10`` (:func:`stereodrr.imaging.materials.attenuation_table`).
        weights: ``(J, K)``, e.g. ``S eps`` (the signal) and ``S eps E`` (its quantum variance).

    Returns:
        ``(J, H, W)``; divide by ``weights.sum(1)`` for the open-field-normalised value.
    """
    if channels.ndim != 3 or att.ndim != 2 or att.shape[0] != channels.shape[0] or weights.ndim != 2 \
            or weights.shape[1] != att.shape[1]:
        raise ValueError(f"spectral_sums: expected channels (M, H, W), att (M, K), weights (J, K), got "
                         f"{tuple(channels.shape)}, {tuple(att.shape)}, {tuple(weights.shape)}")
    m, h, w = channels.shape
    flat = channels.reshape(m, h * w)
    rows = max(1, 2**22 // max(att.shape[1], 1))  # bounded (pixels x bins) working set
    parts = []
    for s in range(0, h * w, rows):
        parts.append(weights @ torch.exp(-(att.T @ flat[:, s:s + rows])))
    out = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    return out.reshape(-1, h, w)


def t_sq_over_q(t: Tensor, q: Tensor) -> Tensor:
    """Effective photon number per incident photon ``t^2 / q`` (``t`` for one energy)."""
    return t * t / q.clamp_min(1e-30)

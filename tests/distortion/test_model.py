"""The intensifier field: the documented formula, its inverse, presets, gradients."""

import numpy as np
import pytest
import torch

from stereodrr.distortion import IntensifierField, intensifier_field

from . import reference as ref


@pytest.mark.parametrize("preset", ["mild", "strong"])
def test_field_is_the_documented_formula(preset):
    f = intensifier_field(preset, 1024, 1024)
    r = getattr(ref, preset)(1024)
    p = np.random.default_rng(0).uniform(-50, 1074, (2000, 2))
    np.testing.assert_allclose(f.distort(p), r.forward(p), atol=1e-9)
    assert f.fov_center == pytest.approx(r.fov_c) and f.fov_radius == pytest.approx(r.fov_r)


def test_undistort_inverts_distort_and_is_differentiable():
    f = intensifier_field("strong", 512, 512)
    q = np.random.default_rng(1).uniform(20, 490, (500, 2))
    p = f.undistort(q)
    np.testing.assert_allclose(f.distort(p), q, atol=1e-8)
    np.testing.assert_allclose(p, ref.strong(512).inverse(q), atol=1e-8)
    # Gradients through the Newton solve: d undistort / d q is the inverse of d distort / d p.
    qt = torch.tensor(q[:3], requires_grad=True)
    J_inv = torch.autograd.functional.jacobian(lambda x: f.undistort(x).sum(0), qt)  # (2, 3, 2)
    J_fwd = torch.autograd.functional.jacobian(lambda x: f.distort(x).sum(0), torch.tensor(p[:3]))
    for k in range(3):
        np.testing.assert_allclose(J_inv[:, k, :].numpy() @ J_fwd[:, k, :].numpy(), np.eye(2), atol=1e-7)


def test_presets_move_the_field_edge_as_described():
    for preset, lo, hi in (("strong", 12.0, 14.5), ("mild", 3.0, 5.0)):
        f = intensifier_field(preset, 1024, 1024)
        a = np.linspace(0, 2 * np.pi, 360, endpoint=False)
        q = np.c_[f.fov_center[0] + f.fov_radius * np.cos(a), f.fov_center[1] + f.fov_radius * np.sin(a)]
        edge = np.hypot(*(q - f.undistort(q)).T).max()
        assert lo < edge < hi, (preset, edge)
    none = intensifier_field("none", 64, 48)
    assert np.allclose(none.distort([[3.0, 4.0]]), [[3.0, 4.0]]) and not np.isfinite(none.fov_radius)


def test_field_validation_and_dict_round_trip():
    f = intensifier_field("strong", 256, 200)
    assert IntensifierField.from_dict(f.to_dict()) == f
    with pytest.raises(ValueError, match="distortion preset"):
        intensifier_field("wild")
    with pytest.raises(ValueError, match="field.radius"):
        IntensifierField(64, 64, (32.0, 32.0), 0.0)
    with pytest.raises(ValueError, match="field.k1"):
        IntensifierField(64, 64, (32.0, 32.0), 32.0, k1=float("nan"))
    with pytest.raises(ValueError, match="points"):
        f.distort(np.zeros((4, 3)))

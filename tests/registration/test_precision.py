"""The registration's Cramér–Rao bound against analytic line integrals of Gaussian blobs."""

import math

import numpy as np
import pytest

from stereodrr.geometry import StereoRig, skew
from stereodrr.registration import PARAMETERS, RigidPose, pose_crlb, pose_fisher_information, translation_basis
from stereodrr.volume import Volume

SIGMA, AMP = 5.0, 0.02  # mm, 1/mm
BLOBS = np.array([[14.0, 3.0, 0.0], [-10.0, 8.0, 6.0], [2.0, -12.0, -9.0]])  # world mm
CENTER = np.array([0.5, -0.5, 1.0])  # the volume centre, off the world origin
PHOTONS = 5e3


def blob_volume() -> Volume:
    n = 81
    origin = CENTER - (n - 1) / 2
    z, y, x = np.meshgrid(*(origin[a] + np.arange(n) for a in (2, 1, 0)), indexing="ij")
    mu = sum(AMP * np.exp(-((x - b[0]) ** 2 + (y - b[1]) ** 2 + (z - b[2]) ** 2) / (2 * SIGMA**2)) for b in BLOBS)
    return Volume.from_numpy(mu, spacing=(1.0, 1.0, 1.0), origin=origin)


def rig_of(kind: str) -> StereoRig:
    common = dict(sid=500.0, sdd=800.0, pixel_spacing=1.0, width=96, height=96, isocenter=CENTER)
    if kind == "single":
        return StereoRig.arc(1, 0.0, names=("ap",), **common)
    if kind == "stereo":
        return StereoRig.convergent(6.0, **common)
    return StereoRig.biplanar(**common)


def analytic_fisher(rig: StereoRig) -> np.ndarray:
    """``sum J^T J N0 exp(-I)`` from closed forms: a Gaussian ``A exp(-|x-c|^2 / 2 s^2)`` integrates
    along a line at distance ``rho`` from ``c`` to ``A s sqrt(2 pi) exp(-rho^2 / 2 s^2)``; its
    derivative w.r.t. ``c`` is ``-I rho_vec / s^2``; a rotation ``dr`` about the volume centre moves
    ``c`` by ``-[c - centre]_x dr`` and a translation ``dt`` by ``B dt``."""
    B = translation_basis(rig)
    F = np.zeros((6, 6))
    for cam in rig.cameras.values():
        v, u = np.mgrid[0:cam.height, 0:cam.width]
        C, d = cam.pixel_to_ray(np.stack([u.ravel(), v.ravel()], 1).astype(float))
        total = np.zeros(len(d))
        J = np.zeros((len(d), 6))
        for b in BLOBS:
            rel = b - C
            rho = rel - np.sum(rel * d, 1, keepdims=True) * d
            line = AMP * SIGMA * math.sqrt(2 * math.pi) * np.exp(-np.sum(rho**2, 1) / (2 * SIGMA**2))
            dI_dc = -line[:, None] * rho / SIGMA**2
            dc_dp = np.hstack([-skew(b - CENTER) * math.pi / 180, B])  # (3, 6) per deg and per mm
            J += dI_dc @ dc_dp
            total += line
        F += (J * (PHOTONS * np.exp(-total))[:, None]).T @ J
    return F


@pytest.mark.parametrize("kind", ["single", "stereo", "biplanar"])
def test_crlb_matches_analytic_line_integrals(kind):
    vol, rig = blob_volume(), rig_of(kind)
    F_ref = analytic_fisher(rig)
    F = pose_fisher_information(vol, rig, photons=PHOTONS)
    d = np.sqrt(np.diag(F_ref))
    # Normalised so rotations (per deg) and translations (per mm) weigh alike.
    assert np.abs(F / np.outer(d, d) - F_ref / np.outer(d, d)).max() < 0.02
    std_ref = np.sqrt(np.diag(np.linalg.inv(F_ref)))
    crlb = pose_crlb(vol, rig, photons=PHOTONS)
    np.testing.assert_allclose([crlb[p] for p in PARAMETERS], std_ref, rtol=0.03)


def test_information_scales_with_dose():
    vol, rig = blob_volume(), rig_of("stereo")
    F = pose_fisher_information(vol, rig, photons=PHOTONS)
    F4 = pose_fisher_information(vol, rig, photons=4 * PHOTONS)
    np.testing.assert_allclose(F4, 4 * F, rtol=1e-9, atol=1e-12 * np.abs(F).max())
    assert pose_crlb(vol, rig, photons=4 * PHOTONS)["depth_mm"] == pytest.approx(
        pose_crlb(vol, rig, photons=PHOTONS)["depth_mm"] / 2, rel=1e-6)


def test_second_view_and_lateral_view_improve_depth():
    vol = blob_volume()
    single, stereo, bi = (pose_crlb(vol, rig_of(k), photons=PHOTONS) for k in ("single", "stereo", "biplanar"))
    assert stereo["depth_mm"] < single["depth_mm"] / math.sqrt(2)  # more than a repeated view
    assert bi["depth_mm"] < stereo["depth_mm"]


def test_bad_input_is_named():
    vol = blob_volume()
    with pytest.raises(ValueError, match="photons"):
        pose_crlb(vol, rig_of("single"), photons=0)
    # Moved far outside the field: the views see nothing.
    away = RigidPose(np.zeros(3), np.array([0.0, 0.0, 400.0]), vol.center)
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match="no information"):
            pose_crlb(vol, rig_of("single"), away)


def test_bound_depends_on_the_pose_matrix_not_on_the_centre_it_is_written_about():
    """A pose read from a ``pose.json`` written about another point (its ``center``) is the same
    CT -> world matrix: the parameters still turn about the volume centre, so the information is
    the same. Before, the rotations turned about the file's centre and the depth bound of one
    pose came out 4x larger about the world origin."""
    vol, rig = blob_volume(), rig_of("stereo")
    pose = RigidPose.from_degrees((4.0, -3.0, 7.0), (1.5, -2.0, 0.5), vol.center)
    elsewhere = RigidPose.from_matrix(pose.matrix, np.array([300.0, -200.0, 50.0]))
    np.testing.assert_allclose(elsewhere.matrix, pose.matrix, atol=1e-12)
    F = pose_fisher_information(vol, rig, pose, photons=PHOTONS)
    F_elsewhere = pose_fisher_information(vol, rig, elsewhere, photons=PHOTONS)
    np.testing.assert_allclose(F_elsewhere, F, rtol=1e-5, atol=1e-9 * np.abs(F).max())

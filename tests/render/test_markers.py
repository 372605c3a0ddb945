"""Analytic sphere markers: chord integrals and projected centres."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera, StereoRig, rotvec_to_matrix
from stereodrr.render import render_drr, render_spheres, sphere_drr
from stereodrr.render.markers import shadow_pixels, sphere_transmission
from stereodrr.volume import Volume

from .helpers import pixel_rays


def test_chord_integral_exact_and_centres_projected():
    rig = StereoRig.convergent(5.0, sid=700, sdd=1200, pixel_spacing=0.15, width=48, height=40,
                               isocenter=(3.0, -2.0, 10.0))
    centers = np.array([[3.2, -2.0, 10.1], [4.0, -1.5, 11.0], [2.1, -2.6, 9.4]])
    dia = np.array([1.0, 1.5, 2.0])
    mu = np.array([0.9, 0.5, 0.3])
    img, uv = render_spheres(centers, dia, mu, rig, dtype=torch.float64)
    for b, name in enumerate(rig.names):
        cam = rig[name]
        src, d = pixel_rays(cam)
        w = centers[None, None] - src  # (1, 1, M, 3)
        h = np.linalg.norm(np.cross(w, d[:, :, None, :]), axis=-1)  # ray-to-centre distance (H, W, M)
        truth = (mu * 2 * np.sqrt(np.clip((dia / 2) ** 2 - h ** 2, 0, None))).sum(-1)
        assert np.abs(img[b].numpy() - truth).max() <= 1e-6 * truth.max()
        assert np.allclose(uv[b].numpy(), cam.project(centers)[0], atol=1e-9)


def test_a_ball_counts_only_in_front_of_the_source():
    """The pixel ray starts at the source (s >= 0, as the volume renderer clips it): a ball behind
    the source cast a full shadow, and one around the source its whole chord. Truth: the roots
    of ``|C + s d - c| = r`` clipped to ``s >= 0``, rays from the pinhole formula written here."""
    R = rotvec_to_matrix(np.array([0.3, -0.2, 0.5]))
    src = np.array([4.0, -3.0, 2.0])
    K = np.array([[40.0, 1.5, 9.3], [0.0, 55.0, 6.8], [0.0, 0.0, 1.0]])
    cam = Camera(K, R, -R @ src, 19, 14)
    axis = R[2]  # principal ray
    side = R[0]
    centers = np.array([src - 30.0 * axis + 1.0 * side,  # behind the source
                        src + 1.5 * axis,  # around the source, centre in front
                        src - 2.0 * axis + 0.5 * side,  # around the source, centre behind
                        src + 40.0 * axis - 2.0 * side])  # in front
    dia = np.array([12.0, 9.0, 10.0, 8.0])
    mu = np.array([0.7, 0.3, 0.5, 0.9])
    v, u = np.mgrid[0:14, 0:19].astype(float)
    d = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T @ R  # R^T K^-1 (u, v, 1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    w = centers - src  # (M, 3)
    b = d @ w.T  # (H, W, M)
    disc = b * b - (w * w).sum(-1) + (dia / 2) ** 2
    root = np.sqrt(np.clip(disc, 0, None))
    length = np.where(disc > 0, np.clip(b + root, 0, None) - np.clip(b - root, 0, None), 0.0)
    img, _ = render_spheres(centers, dia, mu, cam, dtype=torch.float64)
    assert np.abs(img[0].numpy() - (length * mu).sum(-1)).max() < 1e-9
    alone, _ = render_spheres(centers[:1], dia[:1], mu[:1], cam, dtype=torch.float64)
    assert float(alone.abs().max()) == 0.0  # the ball behind the source shadows nothing


def test_markers_add_to_a_ct_render():
    rig = StereoRig.convergent(5.0, sid=500, sdd=900, pixel_spacing=1.0, width=25, height=21)  # odd: a pixel ray hits the isocenter
    vol = Volume.from_numpy(np.full((10, 12, 14), 0.01), spacing=(2.0, 2.0, 2.0), origin=(-13.0, -11.0, -9.0))
    ct = render_drr(vol, rig)
    balls, _ = render_spheres([[0.0, 0.0, 0.0]], [1.5], 0.9, rig)
    total = ct + balls
    assert total.shape == ct.shape and float((total - ct).max()) == pytest.approx(0.9 * 1.5, rel=1e-3)


def test_bad_marker_input():
    rig = StereoRig.convergent(5.0, sid=500, sdd=900, pixel_spacing=1.0, width=8, height=8)
    with pytest.raises(ValueError, match="diameters: expected shape"):
        render_spheres(np.zeros((2, 3)), [1.0], 0.5, rig)
    with pytest.raises(ValueError, match="positive"):
        render_spheres(np.zeros((1, 3)), [-1.0], 0.5, rig)
    with pytest.raises(ValueError, match="NaN"):
        render_spheres(np.full((1, 3), np.nan), [1.0], 0.5, rig)
    K = torch.eye(3)[None]
    with pytest.raises(ValueError, match="K: on cpu as torch.float32"):
        sphere_drr(torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                   torch.ones(1, dtype=torch.float64), K, torch.eye(3)[None].double(),
                   torch.zeros(1, 3, dtype=torch.float64), 4, 4)


def test_no_markers_with_one_mu_render_nothing():
    """A phantom without markers is valid: one mu for "every" ball of none rendered nothing before
    it was refused as ``mu: expected shape (0,)``. Truth: no ball, no line integral."""
    rig = StereoRig.convergent(5.0, sid=500, sdd=900, pixel_spacing=1.0, width=9, height=7)
    img, uv = render_spheres(np.zeros((0, 3)), np.zeros(0), 0.5, rig, dtype=torch.float64)
    assert img.shape == (2, 7, 9) and uv.shape == (2, 0, 2) and float(img.abs().max()) == 0.0
    for aperture in ("point", "area"):
        t = sphere_transmission(np.zeros((0, 3)), np.zeros(0), 0.5, rig["left"], aperture)
        assert t.shape == (7, 9) and bool((t == 1.0).all())


def test_bad_ball_input_to_the_aperture_names_it():
    """sphere_transmission's "area" aperture meets the balls first in shadow_pixels: a NaN centre
    failed there as a cast to int, a (2, 2) array as a reshape."""
    cam = StereoRig.convergent(5.0, sid=500, sdd=900, pixel_spacing=1.0, width=8, height=8)["left"]
    with pytest.raises(ValueError, match="centers, diameters: contain NaN"):
        sphere_transmission(np.array([[np.nan, 0.0, 0.0]]), np.ones(1), 0.5, cam)
    with pytest.raises(ValueError, match=r"centers: expected shape \(M, 3\)"):
        sphere_transmission(np.zeros((2, 2)), np.ones(2), 0.5, cam)
    with pytest.raises(ValueError, match="diameters: expected shape"):
        shadow_pixels(np.zeros((2, 3)), np.ones(3), cam)

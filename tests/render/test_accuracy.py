"""Accuracy of the renderer against analytic line integrals (float64 core unless stated)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera
from stereodrr.render import Projector, render_drr
from stereodrr.volume import Volume

from .helpers import ellipsoid_chord, pixel_rays, render

MU = 0.02


def _slab_case(direction: np.ndarray, tilt_deg: float, origin: np.ndarray) -> tuple[Volume, Camera, np.ndarray]:
    """A uniform box 40 x 40 x 10 voxels (spacing 1.5, 1.2, 2.0 mm) and a camera whose rays
    cross both k faces (thickness 20 mm) at ``tilt_deg`` from the k axis; analytic L = mu 20 / cos."""
    vol = Volume.from_numpy(np.full((10, 40, 40), MU), spacing=(1.5, 1.2, 2.0), origin=origin, direction=direction)
    axis_k, axis_i = direction[:, 2], direction[:, 0]
    a = np.radians(tilt_deg)
    p = np.cos(a) * axis_k + np.sin(a) * axis_i
    c = vol.center
    cam = Camera.look_at(c - 500 * p, c, sdd=1000, pixel_spacing=0.2, width=9, height=7, up=direction[:, 1])
    _, d = pixel_rays(cam)
    truth = MU * 20.0 / np.abs(d @ axis_k)
    return vol, cam, truth


@pytest.mark.parametrize("tilt_deg", [0.0, 30.0])
@pytest.mark.parametrize("oblique", [False, True])
def test_uniform_box_integrates_n_voxel_lengths(tilt_deg, oblique, oblique_direction, render_path):
    direction = oblique_direction if oblique else np.eye(3)
    origin = np.array([-31.7, 12.25, 140.0]) if oblique else np.array([0.0, 0.0, 0.0])
    vol, cam, truth = _slab_case(direction, tilt_deg, origin)
    img = render(vol, cam, **render_path)
    assert np.abs(img / truth - 1).max() < (1e-5 if render_path["mode"] == "exact" else 1e-3)


def test_uniform_box_float32_wrapper(oblique_direction):
    vol, cam, truth = _slab_case(oblique_direction, 30.0, np.array([5.0, -7.0, 3.0]))
    exact = render_drr(vol, cam, projector=Projector(mode="exact"))[0].numpy()
    tri = render_drr(vol, cam)[0].numpy()
    assert exact.dtype == np.float32
    assert np.abs(exact / truth - 1).max() < 1e-5
    assert np.abs(tri / truth - 1).max() < 1e-3


def _voxelised_ellipsoid(direction: np.ndarray, semi: np.ndarray, q: np.ndarray, spacing: float = 0.5, sub: int = 5):
    """Partial-volume ellipsoid (mu = MU inside) in a 64 x 48 x 40 mm box: voxel centres decide,
    except in a one-voxel band around the surface where ``sub^3`` sub-samples are averaged."""
    shape = tuple(int(v) for v in (np.array([40.0, 48.0, 64.0]) / spacing))
    vol0 = Volume.from_numpy(np.zeros(shape, np.float32), spacing=(spacing,) * 3, origin=(10.0, -20.0, 5.0),
                             direction=direction)
    center = vol0.center + direction @ np.array([1.3, -0.7, 0.4])
    axes = direction @ q
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1)

    def radius(points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(((vol0.index_to_world(points) - center) @ axes) / semi, axis=-1)

    r = radius(ijk)
    val = (r <= 1).astype(float)
    band = np.nonzero(np.abs(r - 1) < spacing / semi.min())[0]
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    o3 = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    sub_r = radius((ijk[band][:, None, :] + o3[None]).reshape(-1, 3)).reshape(len(band), -1)
    val[band] = (sub_r <= 1).mean(1)
    return vol0, val.reshape(shape) * MU, center, axes


@pytest.fixture(scope="module")
def ellipsoid_case():
    from stereodrr.geometry import rotvec_to_matrix

    semi = np.array([22.0, 15.0, 11.0])
    vol, data, center, axes = _voxelised_ellipsoid(rotvec_to_matrix(np.array([0.3, -0.5, 0.7])), semi,
                                                   rotvec_to_matrix(np.array([0.2, 0.4, -0.3])))
    cam = Camera.look_at(center + np.array([300.0, -450.0, 120.0]), center, sdd=1000, pixel_spacing=1.5,
                         width=40, height=36)
    src, d = pixel_rays(cam)
    return vol, data, cam, ellipsoid_chord(src, d, center, axes, semi)


# Piecewise-constant voxels cannot follow a curved surface: each boundary crossing of a ray errs by
# a fraction of a voxel either way, so per-ray exact-mode errors are ~0.3 voxel / chord (0.5% here)
# while their median stays unbiased; the trilinear interpolant smooths that scatter away.
def test_ellipsoid_chords(render_path, ellipsoid_case):
    vol, data, cam, chord = ellipsoid_case
    tol_abs, tol_signed = (1e-2, 1e-3) if render_path["mode"] == "exact" else (5e-3, 1e-3)
    img = render(vol, cam, data=data, **render_path)
    sel = chord >= 10.0
    assert sel.sum() > 200
    rel = img[sel] / (MU * chord[sel]) - 1
    assert np.median(np.abs(rel)) <= tol_abs
    assert abs(np.median(rel)) <= tol_signed


# 15k rays through a 64^3 volume: slow in Triton's interpreter, so triton runs with -m slow.
@pytest.mark.parametrize("backend", ["numba", "torch", pytest.param("triton", marks=pytest.mark.slow)])
def test_blob_centroid_where_camera_projects(backend):
    if backend == "triton":
        pytest.importorskip("triton")
    spacing = 0.5
    n = 64
    X0 = np.array([12.0, -30.0, 8.0])
    vol0 = Volume.from_numpy(np.zeros((n, n, n)), spacing=(spacing,) * 3, origin=X0 - spacing * (n - 1) / 2 + 0.13)
    k, j, i = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    w = vol0.index_to_world(np.stack([i.ravel(), j.ravel(), k.ravel()], 1))
    blob = np.exp(-0.5 * ((w - X0) ** 2).sum(1) / 1.5 ** 2).reshape(n, n, n)
    vol = vol0.with_data(torch.as_tensor(blob, dtype=torch.float32))
    # The blob (sigma 1.5 mm, ~10 px on the detector) lands off-centre but far from the image edges.
    cam = Camera.look_at(X0 + np.array([40.0, -600.0, 25.0]), X0 + np.array([1.0, 0.0, -0.7]), sdd=1000,
                         pixel_spacing=0.25, width=128, height=120)
    img = render(vol, cam, data=blob, backend=backend)
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    centroid = np.array([(img * u).sum(), (img * v).sum()]) / img.sum()
    uv, _ = cam.project(X0[None])
    assert np.abs(centroid - uv[0]).max() <= 0.05


def _anatomy() -> tuple[Volume, Camera]:
    from stereodrr.phantoms import torso_phantom
    from stereodrr.volume import hu_to_mu

    hu = torso_phantom(size=(40, 32, 24), spacing=(4.0, 4.5, 5.0), supersample=1)
    vol = hu.with_data(hu_to_mu(hu.data))
    cam = Camera.look_at(vol.center + np.array([120.0, -700.0, 60.0]), vol.center, sdd=1100, pixel_spacing=3.0,
                         width=48, height=40)
    return vol, cam


@pytest.mark.parametrize("change", ["flip", "origin", "oblique"])
def test_convention_invariance(change, render_path, oblique_direction):
    vol, cam = _anatomy()
    ref = render(vol, cam, dtype=torch.float32, **render_path)
    data = vol.data.numpy()
    if change == "flip":  # store x and z reversed: same world positions
        last = vol.index_to_world(np.array([[data.shape[2] - 1, 0, data.shape[0] - 1]], float))[0]
        other = Volume.from_numpy(data[::-1, :, ::-1].copy(), vol.spacing, last, vol.direction @ np.diag([-1.0, 1, -1]))
        cam2 = cam
    elif change == "origin":  # anatomy and camera moved together
        shift = np.array([250.0, -80.0, 1000.0])
        other = Volume.from_numpy(data, vol.spacing, vol.origin + shift, vol.direction)
        cam2 = cam.with_pose(cam.R, cam.t - cam.R @ shift)
    else:  # anatomy and camera rotated together about the world origin
        Q = oblique_direction
        other = Volume.from_numpy(data, vol.spacing, Q @ vol.origin, Q @ vol.direction)
        cam2 = cam.with_pose(cam.R @ Q.T, cam.t)
    img = render(other, cam2, dtype=torch.float32, **render_path)
    assert np.abs(img - ref).max() <= 5e-3 * np.abs(ref).max()


@pytest.mark.parametrize("slices", [2, 3])
def test_joseph_slabs_uniform_box_and_ellipsoid(oblique_direction, ellipsoid_case, slices):
    """Joseph slabs of k = 2, 3 slices (``step_mm`` = k voxels): the slab weights still sum to
    the chord (a uniform box integrates exactly) and the ellipsoid's chords stay within a
    tolerance that grows with the slab (its surface is sampled every k slices)."""
    vol, cam, truth = _slab_case(oblique_direction, 30.0, np.array([-31.7, 12.25, 140.0]))
    img = render(vol, cam, mode="joseph", step_mm=slices * 2.0)  # 2 mm: the k axis, dominant here
    assert np.abs(img / truth - 1).max() < 1e-6  # mu itself is stored in float32
    vol, data, cam, chord = ellipsoid_case
    img = render(vol, cam, data=data, mode="joseph", step_mm=slices * 0.5)
    sel = chord >= 10.0
    rel = img[sel] / (MU * chord[sel]) - 1
    assert np.median(np.abs(rel)) <= 5e-3 * slices
    assert abs(np.median(rel)) <= 1e-3 * slices


@pytest.mark.parametrize("backend", ["numba", "torch", "triton"])
def test_joseph_slab_thicker_than_the_volume_samples_its_middle_slice(backend):
    """A slab no thicker than the volume along the ray's dominant axis: step_mm past the volume's
    extent renders as one slab of all its slices, sampled at the middle slice (its centre past
    the box sampled the edge slice, air in a CT, for the whole ray: 0.2 % of the integral)."""
    if backend == "triton":
        pytest.importorskip("triton")
    rng = np.random.default_rng(5)
    nz, ny, nx = 5, 9, 7
    data = rng.uniform(0.5, 1.5, (nz, ny, nx))
    data[:, [0, -1], :] = 0.0  # air in the first and last slices of the dominant axis (y)
    vol = Volume.from_numpy(data.astype(np.float32), (2.0, 3.0, 2.5), (0.0, 0.0, 0.0))
    centre = vol.index_to_world(np.array([[3.0, 4.0, 2.0]]))[0]  # the middle voxel (x, y, z)
    # A 1x1 detector whose one ray runs along +y through the voxel centres of column (3, ., 2).
    cam = Camera.look_at(centre - np.array([0.0, 500.0, 0.0]), centre, sdd=1000.0, pixel_spacing=1.0,
                         width=1, height=1, up=(0.0, 0.0, 1.0))
    path = ny * 3.0  # mm inside the box
    want = data[2, 4, 3] * path  # the middle slice's sample (on a voxel centre) times the path
    for step in (ny * 3.0, 1e3, 1e6):
        img = render(vol, cam, mode="joseph", step_mm=step, backend=backend)
        assert img[0, 0] == pytest.approx(want, rel=1e-6)

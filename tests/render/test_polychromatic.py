"""Polychromatic rendering: monochromatic limit, water beam hardening against a direct spekpy x
xraylib computation, decomposition keeps mu at the reference energy, gradients, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xraylib

from stereodrr.geometry import Camera
from stereodrr.imaging import Balls, DetectorModel, Scene, Voxels, decompose_hu, render_polychromatic
from stereodrr.phantoms import get_material
from stereodrr.physics import Spectrum
from stereodrr.render import render_rig
from stereodrr.volume import Volume, hu_to_mu, mu_water


def _wedge() -> tuple[Volume, Camera]:
    """Water steps 10..190 mm thick along +z (one per 4-column band), air elsewhere;
    a camera 5 m away looking along +z (nearly parallel rays)."""
    nx, ny, nz = 40, 6, 200
    hu = np.full((nz, ny, nx), -1000.0)
    for i in range(nx):
        hu[: 10 + 20 * (i // 4), :, i] = 0.0
    vol = Volume(torch.as_tensor(hu, dtype=torch.float32), origin=(-19.5, -2.5, 0.0), spacing=(1, 1, 1),
                 direction=np.eye(3))
    cam = Camera.look_at((0, 0, -5000.0), (0, 0, 100.0), 5400.0, 1.08, 40, 6, up=(0, -1, 0))
    return vol, cam


@pytest.mark.parametrize("decomposition, energy", [("water", 45.0), ("water", 80.0), ("tissue_bone", 60.0)])
def test_monochromatic_limit_equals_the_monochromatic_render(decomposition, energy):
    from stereodrr.phantoms import torso_phantom

    hu = torso_phantom(size=(32, 24, 20), spacing=8.0)
    cam = Camera.look_at(hu.center + np.array([0, -700.0, 0]), hu.center, 1100.0, 2.0, 48, 40)
    ref = render_rig(hu.with_data(hu_to_mu(hu.data, energy)), [cam])["view0"]
    det = DetectorModel(spectrum=Spectrum.monochromatic(energy))
    scene = Scene((Voxels(hu),), energy_kev=60.0 if decomposition == "tissue_bone" else energy,
                  decomposition=decomposition)
    poly = render_polychromatic(scene, [cam], det)["view0"]
    assert float(ref.max()) > 2.0
    # Renders are float32: the two paths agree to 1e-6 relative (rounding of the channel sum).
    assert torch.allclose(poly, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("decomposition, tol", [("water", 1e-4), ("tissue_bone", 0.01)])
def test_water_beam_hardening_matches_spekpy_times_xraylib(decomposition, tol):
    import spekpy

    vol, cam = _wedge()
    # Path length per pixel from the monochromatic render (geometry only).
    length = render_rig(vol.with_data(hu_to_mu(vol.data, 60.0)), [cam])["view0"][3].numpy() / mu_water(60.0)
    spec = Spectrum.from_tube(80.0, "Al:2.5", min_fraction=0.0)
    det = DetectorModel(spectrum=spec)
    img = render_polychromatic(Scene((Voxels(vol),), decomposition=decomposition), [cam], det)["view0"][3].numpy()
    mu_eff = img / length
    # Direct: spekpy's own spectrum, xraylib's water, an ideal energy-integrating detector.
    s = spekpy.Spek(kvp=80.0, th=12.0, dk=1.0)
    s.filter("Al", 2.5)
    k, phi = s.get_spectrum()
    mu_w = np.array([xraylib.CS_Total_CP("Water, Liquid", float(e)) for e in k]) / 10.0  # 1/mm at 1 g/cm^3
    direct = -np.log((phi * k * np.exp(-np.outer(length, mu_w))).sum(1) / (phi * k).sum()) / length
    assert np.all(np.diff(mu_eff[::4]) < 0)  # beam hardening: effective mu falls with thickness
    assert direct[0] / direct[-1] > 1.1
    assert np.allclose(mu_eff, direct, rtol=tol, atol=0)


def test_decomposition_keeps_mu_at_the_reference_energy_and_separates_bone(unchecked):
    hu = torch.tensor([-1000.0, -800.0, -100.0, 0.0, 40.0, 400.0, 1000.0, 2500.0, 3500.0], dtype=torch.float64)
    names, rho = decompose_hu(hu, 60.0)
    assert names == ["soft_tissue", "cortical_bone", "titanium"]
    mu = sum(rho[i] * get_material(n).mass_attenuation(60.0) / 10 for i, n in enumerate(names))
    below = hu < 3000
    assert torch.allclose(mu[below], hu_to_mu(hu, 60.0)[below], rtol=1e-12, atol=1e-15)
    assert float(rho[2, -1]) == pytest.approx(4.43) and float(rho[:2, -1].abs().sum()) == 0.0
    assert float(rho[1, 3]) == 0.0 and float(rho[1, 6]) > 0.5  # water is tissue, 1000 HU mostly bone
    with pytest.raises(ValueError, match="decomposition: expected one of"):
        decompose_hu(hu, 60.0, model="three")


def test_polychromatic_render_is_differentiable():
    vol, cam = _wedge()
    cam = Camera.look_at((0, 0, -5000.0), (0, 0, 100.0), 5400.0, 2.16, 20, 3, up=(0, -1, 0))
    hu = vol.data[::10, ::2, ::2].clone().requires_grad_(True)  # float32: Volume keeps the leaf
    v = Volume(hu, origin=(-19.0, -2.0, 4.5), spacing=(2, 2, 10), direction=np.eye(3))
    det = DetectorModel(spectrum=Spectrum.from_tube(70.0, "Al:2"))
    out = render_polychromatic(v, [cam], det)["view0"]
    out.sum().backward()
    assert hu.grad is not None and float(hu.grad.abs().sum()) > 0


def test_bad_input():
    with pytest.raises(ValueError, match="it is empty"):
        render_polychromatic(None, [Camera.look_at((0, 0, -500.0), (0, 0, 0), 900.0, 1.0, 8, 8, up=(0, -1, 0))])
    with pytest.raises(ValueError, match="unknown material 'unobtainium'"):
        decompose_hu(torch.zeros(3), metal="unobtainium")


def test_balls_alone_through_the_area_aperture_match_brute_force_sub_cameras():
    from stereodrr.render import render_spheres
    from stereodrr.render.aperture import subpixel_cameras

    cam = Camera.look_at((0, -700.0, 0), (0, 0, 0), 1100.0, 0.3, 40, 32)
    centres, diam = np.array([[0.3, 0.0, -0.7], [-4.1, 5.0, 2.2]]), np.array([2.0, 1.5])
    spec = Spectrum.from_tube(80.0, "Al:2.5")
    det = DetectorModel(spectrum=spec, subpixels=4)
    img = render_polychromatic(Scene(balls=Balls.of(centres, diam, ["stainless_steel"] * 2)), [cam], det)["view0"]
    # Brute force: every sub-ray its own pixel-centre camera, the spectrum summed per sub-ray.
    steel = get_material("stainless_steel")
    mu = steel.mass_attenuation(spec.energies_kev) * steel.density / 10.0
    w = spec.weights * spec.energies_kev
    t = 0.0
    for c in subpixel_cameras(cam, 4):
        chord = render_spheres(centres, diam, 1.0, c, dtype=torch.float64)[0][0].numpy()  # mm
        t = t + (w[None, None] * np.exp(-chord[..., None] * mu)).sum(-1) / w.sum()
    ref = -np.log(t / 16)
    assert ref.max() > 2.0
    np.testing.assert_allclose(img.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_former_keywords_still_work_with_a_deprecation_warning():
    from stereodrr.phantoms import torso_phantom

    hu = torso_phantom(size=(16, 12, 10), spacing=16.0)
    cam = Camera.look_at(hu.center + np.array([0, -700.0, 0]), hu.center, 1100.0, 4.0, 24, 20)
    det = DetectorModel(spectrum=Spectrum.from_tube(80.0, "Al:2.5"))
    with pytest.warns(DeprecationWarning, match="build a Scene"):
        old = render_polychromatic(hu, [cam], det, decomposition="water", mode="exact")["view0"]
    from stereodrr.render import Projector

    new = render_polychromatic(Scene((Voxels(hu),), decomposition="water"), [cam], det, Projector("exact"))["view0"]
    assert torch.equal(old, new)

"""A DRR recorded through a map (``DistortionMap.distort_image``) and registration on raw frames
through it (``RegistrationOptions.distortion``): checked against shifts whose recorded image is
known exactly, and against the pose of views recorded by the simulator's own field."""

import math

import numpy as np
import pytest
import torch

from stereodrr.distortion import DistortionMap, PolynomialCorrection


def _shift_map(du: float, dv: float, width: int = 24, height: int = 20, **kw) -> DistortionMap:
    """A map whose correction is a constant shift: recorded pixel ``q`` sees the ideal image at ``q + (du, dv)``."""
    q = np.random.default_rng(0).uniform(0, 20, (10, 2))
    corr = PolynomialCorrection.fit(q, np.tile([du, dv], (10, 1)), 1, (0.5 * (width - 1), 0.5 * (height - 1)),
                                    0.5 * max(width, height))
    return DistortionMap(width, height, corr, **kw)


def test_a_whole_pixel_shift_moves_the_image_and_binning_scales_it():
    img = np.random.default_rng(1).uniform(0, 1, (20, 24))
    rec = _shift_map(3.0, -2.0).distort_image(img)
    # recorded[v, u] = ideal[v - 2, u + 3]; pixels whose source leaves the image get only their part of it
    np.testing.assert_allclose(rec[2:, :-3], img[:-2, 3:], atol=1e-12)
    assert np.abs(rec[:2]).max() < 1e-12 and np.abs(rec[:, -3:]).max() < 1e-12
    binned = img.reshape(10, 2, 12, 2).mean((1, 3))
    rec2 = _shift_map(4.0, -2.0).distort_image(binned, scale=2)  # 2 and 1 binned pixels
    np.testing.assert_allclose(rec2[1:, :-2], binned[:-1, 2:], atol=1e-12)


def test_a_half_pixel_shift_averages_neighbours_and_is_differentiable():
    img = torch.rand(20, 24, dtype=torch.float64, requires_grad=True)
    rec = _shift_map(0.5, 0.0).distort_image(img)
    torch.testing.assert_close(rec[:, :-1], 0.5 * (img[:, :-1] + img[:, 1:]), atol=1e-12, rtol=0)
    rec.sum().backward()
    assert torch.all(img.grad[:, 1:-1] == 1.0) and torch.all(img.grad[:, 0] == 0.5)


def test_recorded_support_leaves_out_the_round_field_and_what_the_ideal_image_lacks():
    m = _shift_map(3.0, 0.0, field_center=(11.5, 9.5), field_radius=8.0)
    s = m.recorded_support(margin=1.0)
    v, u = np.mgrid[0:20, 0:24]
    inside = np.hypot(u - 11.5, v - 9.5) <= 7.0
    np.testing.assert_array_equal(s, inside & (u < 21))
    assert not m.recorded_support(scale=2)[0].any()  # binned rows at the top reach outside the field


def test_a_binning_that_leaves_no_pixel_is_refused():
    with pytest.raises(ValueError, match="scale"):
        _shift_map(1.0, 1.0).recording_operator(25)


def _views(n: int = 64):
    """Views of a torso CT at a known pose, recorded through a strong intensifier by the simulator
    (the views rendered 4x finer, each recorded pixel the mean over its pre-image), and the
    field's correction as a map."""
    from stereodrr.distortion import distort_image, intensifier_field
    from stereodrr.geometry import StereoRig, oversampled_camera
    from stereodrr.phantoms import torso_phantom
    from stereodrr.registration import RigidPose, render_views
    from stereodrr.volume import hu_to_mu
    from tests.distortion.reference import map_of_field

    ct = torso_phantom(size=(48, 40, 32), spacing=6.0)
    vol = ct.with_data(hu_to_mu(ct.data, 60.0))
    rig = StereoRig.convergent(5.0, 750, 1200, 8.0 * 64 / n, n, n)
    truth = RigidPose.from_degrees([1.0, 0.0, -1.5], [3.0, -2.0, 1.0], vol.center)
    field = intensifier_field("strong", n, n, fov_radius=0.48 * n, k1=0.1, s_deg=2.0)
    fine = StereoRig({k: oversampled_camera(rig[k], 4) for k in rig.names}, rig.isocenter)
    raw = {k: distort_image(3e4 * torch.exp(-line.double()), field).numpy()
           for k, line in zip(rig.names, render_views(vol, fine, truth))}
    m = map_of_field(field, step=4, degree=4)
    m.field_center, m.field_radius = field.fov_center, field.fov_radius
    return vol, rig, truth, raw, m


def test_registration_on_raw_frames_records_its_drrs_through_the_maps():
    """Raw frames with a round field (black outside): the DRRs recorded through each view's map
    find the pose to within the undistorted frames' own error (0.96 mm on this 64^2 scene,
    ~5 mm pixel footprint; measured 1.0 mm with a round field)."""
    from stereodrr.registration import Level, RegistrationOptions, register, registration_errors

    vol, rig, truth, raw, m = _views()
    line = {k: -np.log(np.maximum(raw[k], 1.0) / 3e4) for k in rig.names}
    opts = RegistrationOptions(levels=[Level(2, 60, 2), Level(1, 30, 1)], progress=False,
                               distortion={k: m for k in rig.names})
    res = register(vol, rig, line, options=opts)
    assert registration_errors(res.pose, truth, rig, vol.corners())["mtre_mm"] < 1.5
    # what it reports is what it compared: the DRR as recorded, black outside the field
    assert res.rendered["left"][0, 0] == 0.0 and math.isfinite(res.loss)


def test_registration_refuses_a_map_of_another_size():
    from stereodrr.registration import RegistrationOptions, register

    vol, rig, truth, raw, m = _views()
    with pytest.raises(ValueError, match="distortion: the map of view 'left' is for 24x20"):
        register(vol, rig, raw, options=RegistrationOptions(distortion={"left": _shift_map(1, 1)}, progress=False))


def test_coverage_leaves_out_what_lies_outside_the_round_field():
    """A corrected pixel is covered only where its pre-image lies in recorded pixels wholly inside
    the field (a black rim is no data), and by the part of it inside the image."""
    m = _shift_map(0.0, 0.0, field_center=(11.5, 9.5), field_radius=8.0)
    v, u = np.mgrid[0:20, 0:24]
    np.testing.assert_allclose(m.coverage(), np.hypot(u - 11.5, v - 9.5) <= 8.0 - np.sqrt(0.5), atol=1e-9)
    half = _shift_map(0.5, 0.0).coverage()  # corrected u sees recorded u - 0.5 .. u + 0.5 shifted by half a pixel
    np.testing.assert_allclose(half[:, 1:], 1.0, atol=1e-9)
    np.testing.assert_allclose(half[:, 0], 0.5, atol=1e-9)


def test_a_field_no_wider_than_its_margin_masks_every_pixel():
    """The usable disc is ``radius - margin``: none when that is negative (squaring it kept a disc)."""
    from stereodrr.distortion import FieldOfView

    assert not FieldOfView((3.0, 3.0), 1.0, 2.0).mask((20, 24)).any()
    v, u = np.mgrid[0:20, 0:24]
    np.testing.assert_array_equal(FieldOfView((11.5, 9.5), 8.0, 1.0).mask((20, 24)), np.hypot(u - 11.5, v - 9.5) <= 7.0)

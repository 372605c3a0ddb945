"""Input kinds: line integrals used as they are, raw intensities converted, bad images refused,
inverted contrast warned about."""

import numpy as np
import pytest
import torch

from stereodrr.geometry import StereoRig
from stereodrr.imaging import detect, to_uint16
from stereodrr.phantoms import torso_phantom
from stereodrr.registration import (
    Level,
    RegistrationInputWarning,
    RegistrationOptions,
    RigidPose,
    register,
    render_views,
)
from stereodrr.registration.inputs import guess_kind, to_line_integral
from stereodrr.volume import hu_to_mu


@pytest.fixture(scope="module")
def scene():
    ct = torso_phantom(size=(48, 40, 32), spacing=6.0)
    vol = ct.with_data(hu_to_mu(ct.data))
    rig = StereoRig.arc(1, 0.0, names=("ap",), sid=750, sdd=1200, pixel_spacing=8.0, width=64, height=64)
    line = render_views(vol, rig, RigidPose.identity(vol.center))
    return vol, rig, line


def test_raw_16bit_counts_become_line_integrals(scene):
    _, _, line = scene
    counts = detect(line, 1e4, seed=1)[0]
    raw, _ = to_uint16(counts.clamp_min(0), 1.0)  # one digital unit per photon
    assert guess_kind(raw) == "intensity"
    converted, kind = to_line_integral(raw, "auto", "ap.tif")
    assert kind == "intensity" and converted.dtype == np.float32
    # -log(N / I0) with I0 ~ 1e4 in air: the true line integral up to noise and the I0 estimate.
    truth = line[0].numpy()
    assert abs(np.median(converted - truth)) < 0.02
    assert np.corrcoef(converted.ravel(), truth.ravel())[0, 1] > 0.99


def test_float_intensity_is_recognised_by_its_match_with_the_drr(scene):
    _, _, line = scene
    intensity = np.exp(-line[0].numpy()) * 1000.0
    assert guess_kind(intensity, line[0].numpy()) == "intensity"
    assert guess_kind(line[0].numpy(), line[0].numpy()) == "line_integral"
    out, kind = to_line_integral(intensity, "auto", drr=line[0].numpy())
    np.testing.assert_allclose(out - out.min(), line[0].numpy() - line[0].numpy().min(), atol=1e-4)


def test_normalised_float_intensity_keeps_every_pixel_below_half(scene):
    """A flat-field-normalised I/I0 in [0, 1] (zero outside a collimated border): the zeros are
    raised to half the smallest value recorded, not half a count, which flattened every pixel
    behind more than -log 0.5 = 0.69 of attenuation."""
    _, _, line = scene
    truth = line[0].numpy().astype(np.float64)
    normalised = np.exp(-truth)
    normalised[:, :3] = 0.0  # the border
    out, kind = to_line_integral(normalised, "intensity")
    assert kind == "intensity" and truth.max() > 1.0
    inside = np.s_[:, 3:]
    i0 = np.median(normalised[normalised >= 0.8 * np.percentile(normalised, 99.9)])  # the air, as read
    np.testing.assert_allclose(out[inside], (truth + np.log(i0))[inside], atol=1e-5)


def test_bad_kinds_are_refused(scene):
    _, _, line = scene
    raw = (np.exp(-line[0].numpy()) * 60000).astype(np.uint16)
    with pytest.raises(ValueError, match="ap.tif: an integer image with values up to .* is a raw frame"):
        to_line_integral(raw, "line_integral", "ap.tif")
    with pytest.raises(ValueError, match="raw intensities cannot be negative"):
        to_line_integral(line[0].numpy() - 3.0, "intensity", "ap.tif")
    with pytest.raises(ValueError, match="a line integral -log"):
        to_line_integral(line[0].numpy() - 3.0, "line_integral", "ap.tif")
    with pytest.raises(ValueError, match="kind"):
        to_line_integral(raw, "counts")


def test_inverted_contrast_warns(scene):
    vol, rig, line = scene
    intensity = torch.exp(-line)  # given where a line integral is expected
    with pytest.warns(RegistrationInputWarning, match="contrast looks inverted"):
        register(vol, rig, intensity, options=RegistrationOptions(levels=(Level(4, 2, 4),), progress=False))


def test_thick_slices_warn(scene):
    _, rig, _ = scene
    ct = torso_phantom(size=(48, 40, 8), spacing=(6.0, 6.0, 24.0))
    vol = ct.with_data(hu_to_mu(ct.data))
    line = render_views(vol, rig, RigidPose.identity(vol.center))
    with pytest.warns(RegistrationInputWarning, match="voxels of 24 mm along one axis"):
        register(vol, rig, line, options=RegistrationOptions(levels=(Level(4, 2, 4),), progress=False))


def test_a_ct_in_hu_is_refused_where_attenuation_is_expected():
    """A CT given in HU (air about -1000) to register or track, which expect mu: refused with
    the fix, not registered 45 mm off (no material attenuates negatively)."""
    from stereodrr.registration import register
    from stereodrr.track.bones import track_bone

    ct = torso_phantom(size=(24, 20, 16), spacing=12.0)
    rig = StereoRig.convergent(5.0, 750, 1200, 8.0, 32, 32)
    images = [np.zeros((32, 32))] * 2
    with pytest.raises(ValueError, match=r"volume: expected attenuation .* down to -9\d\d.*hu_to_mu"):
        register(ct, rig, images)
    with pytest.raises(ValueError, match="a CT in HU"):
        track_bone(ct, rig, [dict(zip(rig.names, images))])
    with pytest.raises(ValueError, match="constant"):  # mu passes this check and fails on the blank images
        register(ct.with_data(hu_to_mu(ct.data, 60.0)), rig, images)

"""Trials: the Autoscoper wrist sample loads as Autoscoper loads it, bad trials give one-line
errors, and the intensifier's round field is found where it was drawn."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from stereodrr.distortion import falloff_margin
from stereodrr.interop import load_mayacam
from stereodrr.trial import field_of_view, frame_polarity, line_integral_frame, load_trial, read_frame, sequence_files

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"


def test_wrist_sample_loads():
    trial = load_trial(DATA / "wrist.cfg")
    assert trial.rig.names == ["cam1", "cam2"] and trial.n_frames == 3
    np.testing.assert_array_equal(trial.rig["cam2"].K, load_mayacam(DATA / "Calibration/xr_calib_wrist_cam02.txt").K)
    assert [p.name for p in trial.frames["cam1"]] == [f"xr_rad_uln_cam01_UND.{n}.tif" for n in ("0002", "0099", "0158")]
    assert [v.name for v in trial.volumes] == ["rad_dcm_cropped", "uln_dcm_cropped"]
    images = trial.images(1)
    assert images["cam1"].shape == (1760, 1760) and images["cam1"].dtype == np.uint8
    lines, masks = trial.line_integrals(1)
    assert np.all(lines["cam1"][~masks["cam1"]] == 0) and 0.6 < masks["cam1"].mean() < 0.85
    # The bones absorb: the forearm's line integrals exceed the open field's.
    assert np.median(lines["cam1"][masks["cam1"]]) < np.percentile(lines["cam1"][masks["cam1"]], 95) - 0.5
    with pytest.raises(ValueError, match="frame"):
        trial.images(3)
    with pytest.raises(ValueError, match="volume"):
        trial.volume(2)


def _copy(tmp_path):
    root = tmp_path / "w"
    shutil.copytree(DATA, root)
    return root


def test_trial_with_missing_or_mismatched_frames_or_volumes(tmp_path):
    root = _copy(tmp_path)
    (root / "XMA_UND/xr_data_wrist_cam02/xr_rad_uln_cam02_UND.0158.tif").unlink()
    with pytest.raises(ValueError, match="same number of frames"):
        load_trial(root / "wrist.cfg")
    tifffile.imwrite(root / "XMA_UND/xr_data_wrist_cam02/xr_rad_uln_cam02_UND.0158.tif", np.zeros((100, 120), np.uint8))
    with pytest.raises(ValueError, match="120x100 pixels, camera 'cam2' is calibrated for 1760x1760"):
        load_trial(root / "wrist.cfg")
    shutil.rmtree(root / "XMA_UND/xr_data_wrist_cam02")
    with pytest.raises(FileNotFoundError, match="xr_data_wrist_cam02"):
        load_trial(root / "wrist.cfg")
    root = _copy(tmp_path / "b")
    (root / "Models/uln_dcm_cropped.tif").unlink()
    with pytest.raises(FileNotFoundError, match="uln_dcm_cropped"):
        load_trial(root / "wrist.cfg")
    (root / "Calibration/xr_calib_wrist_cam01.txt").unlink()
    with pytest.raises(FileNotFoundError, match="xr_calib_wrist_cam01"):
        load_trial(root / "wrist.cfg")


def test_a_camera_listed_twice_or_indented_lines_are_named(tmp_path):
    """A trial file that lists one calibration twice has no baseline between those cameras; a
    file whose lines are indented is read by Autoscoper as one without keys: both said plainly."""
    root = _copy(tmp_path)
    text = (root / "wrist.cfg").read_text()
    twice = text.replace("mayaCam_csv Calibration/xr_calib_wrist_cam02.txt\n",
                         "mayaCam_csv Calibration/xr_calib_wrist_cam02.txt\n" * 2)
    twice = twice.replace("CameraRootDir XMA_UND/xr_data_wrist_cam02\n", "CameraRootDir XMA_UND/xr_data_wrist_cam02\n" * 2)
    (root / "twice.cfg").write_text(twice)
    with pytest.raises(ValueError, match="cameras cam2 and cam3 have their source at one place"):
        load_trial(root / "twice.cfg")
    (root / "indented.cfg").write_text("".join("  " + line + "\n" for line in text.splitlines()))
    with pytest.warns(UserWarning, match="13 line\\(s\\) start with blanks or separate their key by a tab"):
        with pytest.raises(ValueError, match="expected at least one mayaCam_csv line"):
            load_trial(root / "indented.cfg")


def test_a_trial_of_png_frames_or_upper_case_tif_loads_as_its_tiffs(tmp_path):
    """Autoscoper reads only ``*.tif*`` frames; a lab's PNG export, or TIFFs named ``.TIF``,
    load as image sequences sorted by name, the same pixels as the sample's TIFFs."""
    root = _copy(tmp_path)
    ref = load_trial(DATA / "wrist.cfg", volumes=False)
    for f in sorted((root / "XMA_UND/xr_data_wrist_cam01").iterdir()):
        cv2.imwrite(str(f.with_suffix(".png")), tifffile.imread(f))
        f.unlink()
    for f in sorted((root / "XMA_UND/xr_data_wrist_cam02").iterdir()):
        f.rename(f.with_suffix(".TIF"))
    trial = load_trial(root / "wrist.cfg", volumes=False)
    assert [p.suffix for p in trial.frames["cam1"]] == [".png"] * 3
    assert [p.suffix for p in trial.frames["cam2"]] == [".TIF"] * 3
    for i in range(3):
        for cam, image in trial.images(i).items():
            np.testing.assert_array_equal(image, ref.images(i)[cam])
    for f in (root / "XMA_UND/xr_data_wrist_cam01").iterdir():
        f.rename(f.with_suffix(".txt"))
    with pytest.raises(ValueError, match="holds no frame"):
        load_trial(root / "wrist.cfg", volumes=False)


def test_frames_numbered_differently_between_cameras_warn(tmp_path, recwarn):
    root = _copy(tmp_path)
    load_trial(root / "wrist.cfg", volumes=False)
    assert not [w for w in recwarn if "numbered differently" in str(w.message)]
    cam2 = root / "XMA_UND/xr_data_wrist_cam02"
    (cam2 / "xr_rad_uln_cam02_UND.0158.tif").rename(cam2 / "xr_rad_uln_cam02_UND.0160.tif")
    with pytest.warns(UserWarning, match=r"frame 2 pairs files numbered differently \(cam1 \S+0158.tif, cam2 \S+0160.tif"):
        trial = load_trial(root / "wrist.cfg", volumes=False)
    assert trial.frames["cam2"][2].name.endswith("0160.tif")  # still paired by position, as Autoscoper does


def _disk_image(shape, center, radius, inside=200.0, outside=0.0, sub=8):
    """A round field drawn by supersampling (area fraction per pixel), not by the code under test."""
    h, w = shape
    o = (np.arange(sub) + 0.5) / sub - 0.5
    v = (np.arange(h)[:, None] + o[None, :]).ravel()
    u = (np.arange(w)[:, None] + o[None, :]).ravel()
    d2 = (u[None, :] - center[0]) ** 2 + (v[:, None] - center[1]) ** 2
    frac = (d2 <= radius ** 2).reshape(h, sub, w, sub).mean(axis=(1, 3))
    return outside + (inside - outside) * frac


@pytest.mark.parametrize("center, radius", [((150.3, 140.8), 120.4), ((160.0, 170.0), 185.2), ((100.7, 210.2), 90.0)])
def test_round_field_found_where_it_was_drawn(center, radius):
    image = _disk_image((300, 320), center, radius)
    rng = np.random.default_rng(0)
    v, u = np.mgrid[:300, :320]
    image = image * (1 - 0.3 * ((u - 160) / 320) ** 2)  # vignetting
    image[(u - center[0]) ** 2 + (v - center[1]) ** 2 < (0.6 * radius) ** 2] *= 0.4  # an object in the field
    image = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
    fov = field_of_view(image)
    np.testing.assert_allclose(fov.center, center, atol=0.3)
    assert abs(fov.radius - radius) < 0.5
    assert frame_polarity(image, fov) == "bright_air" and frame_polarity(255 - image) == "dark_air"
    line, mask = line_integral_frame(255 - image)  # an inverted export reads as the same attenuation
    ref, ref_mask = line_integral_frame(image)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(line, ref, atol=0.02)


def _falling_off_field(shape, center, radius, band, seed=0):
    """A raw intensifier frame: air at 250 whose brightness falls linearly over the ``band`` px next
    to the edge, to a fifth of it at the edge, black outside, with dark discs of anatomy (some in
    the band) and noise."""
    v, u = np.mgrid[:shape[0], :shape[1]]
    r = np.hypot(u - center[0], v - center[1])
    image = np.where(r < radius, 250.0 * np.clip(0.2 + 0.8 * (radius - r) / band, 0.0, 1.0), 0.0)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        a = rng.uniform(0, 2 * np.pi)
        c = (center[0] + rng.uniform(0.3, 0.95) * radius * np.cos(a), center[1] + rng.uniform(0.3, 0.95) * radius * np.sin(a))
        image[np.hypot(u - c[0], v - c[1]) < rng.uniform(10, 30)] *= 0.5
    return np.clip(image + rng.normal(0, 2, shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("band", [20.0, 40.0])
def test_the_band_where_the_brightness_falls_off_is_left_out(band):
    """The fitted edge lies where the frame is a quarter of the way up from black (a ratio of 0.25,
    0.0625 band inside the drawn edge); the brightness recovers to 0.97 of the air's at 0.9625 band
    inside it: the margin is 0.9 band, and no air in the mask reads as more than -log 0.97."""
    image = _falling_off_field((400, 420), (205.3, 198.6), 190.0, band)
    fov = field_of_view(image)
    assert abs(fov.radius - (190.0 - 0.0625 * band)) < 1.0
    margin = falloff_margin(image, fov)
    assert abs(margin - 0.9 * band) <= 2.0
    assert falloff_margin(255 - image, field_of_view(255 - image)) == pytest.approx(margin, abs=1.0)
    line, mask = line_integral_frame(image)
    v, u = np.mgrid[:400, :420]
    np.testing.assert_array_equal(mask, np.hypot(u - fov.center[0], v - fov.center[1]) <= fov.radius - margin)
    air = mask & (image > 200)
    # At most -log 0.97 from the fall-off, plus the noise (2 in 250: -log sigma 0.008).
    assert np.median(line[air]) < 0.01 and np.percentile(line[air], 99) < 0.03 + 0.025
    # A field without a fall-off keeps about the default margin (the measure's own smoothing of
    # 2 px reaches a little further); a flat panel has none to measure.
    sharp = _disk_image((300, 320), (160.0, 150.0), 130.0)
    sharp_fov = field_of_view(sharp)
    assert sharp_fov.margin <= falloff_margin(sharp, sharp_fov) <= sharp_fov.margin + 2.0
    flat = field_of_view(np.full((100, 120), 200, np.uint8))
    assert falloff_margin(np.full((100, 120), 200, np.uint8), flat) == flat.margin


def test_flat_panel_has_no_round_field():
    rng = np.random.default_rng(1)
    image = rng.uniform(50, 250, (200, 240)).astype(np.uint16)
    fov = field_of_view(image)
    assert not fov.round and fov.mask(image.shape).all()
    with pytest.raises(ValueError, match="2D"):
        field_of_view(np.zeros((10, 10, 3)))


def test_frames_of_other_formats(tmp_path):
    a = (np.arange(48 * 64) % 251).reshape(48, 64).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "f_001.png"), a)
    cv2.imwrite(str(tmp_path / "f_002.png"), np.dstack([a, a, a]))
    tifffile.imwrite(tmp_path / "f_003.tif", a.astype(np.uint16) * 200)
    files = sequence_files(tmp_path)
    assert [f.name for f in files] == ["f_001.png", "f_002.png", "f_003.tif"]
    np.testing.assert_array_equal(read_frame(files[1]), a)
    assert read_frame(files[2]).dtype == np.uint16
    cv2.imwrite(str(tmp_path / "g.png"), np.dstack([a, a, 255 - a]))
    with pytest.raises(ValueError, match="grey"):
        read_frame(tmp_path / "g.png")


def test_an_inverted_12_bit_frame_in_16_bit_words_reads_as_its_raw_frame():
    """A 12-bit camera's frame inverted about its own full scale (4095 - I) and stored as uint16:
    the same attenuation as the raw frame, not one inverted about 65535."""
    image = _disk_image((200, 220), (110.2, 98.7), 90.0, inside=3900.0, outside=0.0)
    v, u = np.mgrid[:200, :220]
    image[(u - 110) ** 2 + (v - 100) ** 2 < 40.0**2] *= 0.35  # a bone in the field
    raw = np.round(image).astype(np.uint16)
    line, mask = line_integral_frame(4095 - raw)
    ref, ref_mask = line_integral_frame(raw)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(line[mask], ref[mask], atol=0.02)
    assert ref[mask].max() > 0.9  # the bone's attenuation, not crushed by a 65535 offset

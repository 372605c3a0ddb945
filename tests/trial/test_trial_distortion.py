"""Frames of an uncorrected image intensifier, corrected by the trial through each camera's map."""

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from stereodrr.cli import main
from stereodrr.distortion import distort_image, intensifier_field, save_distortion
from stereodrr.geometry import Camera, StereoRig
from stereodrr.trial import Trial, load_trial
from tests.distortion.reference import map_of_field

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"


def _disc(shape, center, radius, field=None, sub=8):
    """Area fraction per recorded pixel of a disc of the ideal image, by supersampling: each
    sample is taken back through the known field (numpy, not the resampler under test)."""
    h, w = shape
    o = (np.arange(sub) + 0.5) / sub - 0.5
    v, u = np.meshgrid((np.arange(h)[:, None] + o[None, :]).ravel(), (np.arange(w)[:, None] + o[None, :]).ravel(),
                       indexing="ij")
    q = np.stack([u.ravel(), v.ravel()], -1)
    if field is not None:
        q = np.asarray(field.undistort(q))
    inside = np.hypot(q[:, 0] - center[0], q[:, 1] - center[1]) <= radius
    return inside.reshape(h, sub, w, sub).mean(axis=(1, 3))


def _small_trial(tmp_path, field, ideal_center):
    H = W = 96
    cams = {name: Camera.look_at(np.array([s * 60.0, -700.0, 0.0]), np.zeros(3), sdd=1000, pixel_spacing=2.0,
                                 width=W, height=H) for name, s in (("cam1", 1.0), ("cam2", -1.0))}
    rig = StereoRig(cams, np.zeros(3))
    # cam1 records the ideal dark disc through the field; cam2 records it undistorted
    frames = {}
    for name, f in (("cam1", field), ("cam2", None)):
        img = np.rint(220.0 - 150.0 * _disc((H, W), ideal_center, 6.0, f)).astype(np.uint8)
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "f.0000.tif", img)
        frames[name] = [tmp_path / name / "f.0000.tif"]
    return Trial(rig, frames)


def _centroid(image, near):
    """The dark disc's centroid in a window around ``near`` (the corrected image is black where
    its pixels' pre-images leave the recorded one)."""
    v, u = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    win = np.hypot(u - near[0], v - near[1]) < 12
    w = np.where(win, 220.0 - image.astype(np.float64), 0.0)
    return np.array([(w * u).sum() / w.sum(), (w * v).sum() / w.sum()])


def test_trial_frames_are_corrected_through_each_cameras_map(tmp_path):
    # the strong preset's shape, scaled up so a 96^2 image sees the pixels a 1024^2 one does
    field = intensifier_field("strong", 96, 96, fov_radius=math.inf, k1=0.2, s_deg=4.0)
    ideal = np.array([74.3, 22.6])  # near the edge, where the field moves it most
    trial = _small_trial(tmp_path, field, ideal)
    raw = trial.image("cam1", 0)
    assert np.linalg.norm(_centroid(raw, ideal) - ideal) > 1.0  # the recorded disc is displaced
    m = map_of_field(field)
    corrected = replace(trial, distortion={"cam1": m})
    img = corrected.image("cam1", 0)
    assert img.dtype == np.uint8
    assert np.linalg.norm(_centroid(img, ideal) - ideal) < 0.03  # 4.4 px before
    assert np.array_equal(corrected.image("cam2", 0), trial.image("cam2", 0))  # no map: as recorded
    assert np.array_equal(corrected.images(0)["cam1"], img)


def test_a_map_of_another_size_or_camera_is_refused(tmp_path):
    field = intensifier_field("mild", 96, 96, fov_radius=math.inf)
    trial = _small_trial(tmp_path, field, np.array([48.0, 48.0]))
    small = map_of_field(intensifier_field("mild", 64, 64, fov_radius=math.inf), degree=3)
    with pytest.raises(ValueError, match="distortion map of 'cam1' is for 64x64 images, the camera is calibrated "
                                         "for 96x96"):
        replace(trial, distortion={"cam1": small})
    with pytest.raises(ValueError, match="distortion map for camera 'cam3'"):
        replace(trial, distortion={"cam3": map_of_field(field, degree=3)})


@pytest.mark.slow
def test_beads_on_distorted_wrist_frames_with_their_maps(tmp_path):
    """The real wrist frames distorted through two known strong fields (area-preserving), then
    tracked with the fields' maps: the same beads where the undistorted frames put them."""
    root = tmp_path / "w"
    shutil.copytree(DATA, root)
    trial = load_trial(root / "wrist.cfg")
    maps = []
    for k, cam in enumerate(trial.rig.names):
        field = intensifier_field("strong", 1760, 1760, fov_radius=math.inf, s_deg=0.7 * (-1) ** k)
        for f in trial.frames[cam]:
            raw = tifffile.imread(f)
            tifffile.imwrite(f, np.clip(np.rint(distort_image(raw.astype(np.float64), field)), 0, 255).astype(np.uint8))
        maps.append(save_distortion(map_of_field(field), tmp_path / f"{cam}.json"))
    assert main(["beads", "--trial", str(DATA / "wrist.cfg"), "-o", str(tmp_path / "ref"), "--no-figures"]) == 0
    assert main(["beads", "--trial", str(root / "wrist.cfg"), "--distortion", *map(str, maps),
                 "-o", str(tmp_path / "und"), "--no-figures"]) == 0
    ref = pd.read_csv(tmp_path / "ref" / "points3d.csv").to_numpy(float)
    und = pd.read_csv(tmp_path / "und" / "points3d.csv").to_numpy(float)
    assert ref.shape == und.shape
    d = np.linalg.norm((und - ref).reshape(len(ref), -1, 3), axis=-1)
    assert np.nanmedian(d) < 0.03 and np.nanmax(d) < 0.15, d

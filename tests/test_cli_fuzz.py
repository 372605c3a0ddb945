"""CLI fuzz: generated bad inputs of every kind for every sub-command.

Each case must end with a non-zero status and exactly one error line on stderr (no traceback),
within a bounded time and memory, and must write nothing into an output folder that already
held files. The good files each case starts from are made here (rig, CT, phantom, images,
config); the bad ones are derived from them: missing, a folder, empty, truncated, corrupt,
malformed JSON, wrong schema or types, NaN, negative and huge sizes, a non-rotation R, NaN
voxels, images of the wrong size, constant images, and unwritable outputs.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from stereodrr.cli import main
from stereodrr.geometry import StereoRig, rig_to_dict, save_rig
from stereodrr.phantoms import torso_phantom
from stereodrr.phantoms.io import BUILTIN_DIR
from stereodrr.volume import save_volume

CASE_SECONDS = 120  # a hang guard, far above any case (they fail before rendering)
CASE_MEMORY = 1 << 30  # peak RSS growth allowed per case
SENTINEL = "keep.txt"


def _write_json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("fuzz")
    f: dict[str, str] = {}
    rig = StereoRig.convergent(5.0, 750, 1200, 4.0, 32, 24)
    save_rig(rig, d / "rig.json")
    f["rig"] = str(d / "rig.json")
    good = rig_to_dict(rig)

    def rig_variant(name: str, edit) -> None:
        data = json.loads(json.dumps(good))
        edit(data)
        f[name] = _write_json(d / f"{name}.json", data)

    rig_variant("rig_nan", lambda r: r["views"][0]["K"][0].__setitem__(0, float("nan")))
    rig_variant("rig_not_rotation", lambda r: r["views"][0].__setitem__("R", [[2, 0, 0], [0, 1, 0], [0, 0, 1]]))
    rig_variant("rig_negative", lambda r: r["views"][0].__setitem__("width", -5))
    rig_variant("rig_type", lambda r: r["views"][0].__setitem__("width", "wide"))
    rig_variant("rig_schema", lambda r: r.__setitem__("schema", "other/9"))
    huge = StereoRig.convergent(5.0, 750, 1200, 0.01, 100000, 100000)
    save_rig(huge, d / "rig_huge.json")
    f["rig_huge"] = str(d / "rig_huge.json")

    ct = torso_phantom(size=(24, 20, 16), spacing=8.0)
    save_volume(ct, d / "ct.mha")
    save_volume(ct, d / "ct.nii.gz")
    f["ct"] = str(d / "ct.mha")
    for name in ("ct.mha", "ct.nii.gz"):
        raw = (d / name).read_bytes()
        (d / f"trunc_{name}").write_bytes(raw[: len(raw) * 6 // 10])
        f["trunc_" + name.split(".")[1]] = str(d / f"trunc_{name}")
    nan = ct.data.numpy().copy()
    nan[3, 4, 5] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(d / "ct_nan.mha"))
    f["ct_nan"] = str(d / "ct_nan.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((24, 32), np.float32)), str(d / "ct_2d.mha"))
    f["ct_2d"] = str(d / "ct_2d.mha")

    (d / "empty").write_bytes(b"")
    f["empty"] = str(d / "empty")
    (d / "corrupt.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    f["corrupt"] = str(d / "corrupt.bin")
    for ext in (".mha", ".nii.gz", ".tif", ".json"):
        (d / f"corrupt{ext}").write_bytes(np.random.default_rng(1).bytes(4096))
        f["corrupt_" + ext.split(".")[1]] = str(d / f"corrupt{ext}")
    (d / "malformed.json").write_text('{"schema": "stereodrr.rig/1", "views": [')
    f["malformed"] = str(d / "malformed.json")
    f["json_list"] = _write_json(d / "list.json", [1, 2, 3])
    (d / "a_folder").mkdir()
    f["folder"] = str(d / "a_folder")
    f["missing"] = str(d / "missing.json")
    (d / "a_file").write_text("x")
    f["file"] = str(d / "a_file")
    f["under_file"] = str(d / "a_file" / "out")

    phantom = json.loads((BUILTIN_DIR / "lego_cube.json").read_text())
    f["phantom"] = str(BUILTIN_DIR / "lego_cube.json")
    f["phantom_bad_type"] = _write_json(d / "ph_type.json", {**phantom, "bodies": "many"})
    f["phantom_nan"] = _write_json(d / "ph_nan.json", {**phantom, "markers": [
        {**phantom["markers"][0], "diameter": float("nan")}]})
    f["phantom_negative"] = _write_json(d / "ph_neg.json", {**phantom, "markers": [
        {**phantom["markers"][0], "diameter": -2.0}]})
    f["phantom_no_markers"] = _write_json(d / "ph_nomark.json", {**phantom, "markers": []})

    for name, img in {"img": np.full((24, 32), 1000, np.uint16), "img_wrong_size": np.zeros((10, 10), np.uint16),
                      "img_rgb": np.zeros((24, 32, 3), np.uint8)}.items():
        sitk.WriteImage(sitk.GetImageFromArray(img, isVector=img.ndim == 3), str(d / f"{name}.tif"))
        f[name] = str(d / f"{name}.tif")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((24, 32), np.float32)), str(d / "img_f.tif"))
    f["img_f"] = str(d / "img_f.tif")
    raw = (d / "img.tif").read_bytes()
    (d / "trunc_img.tif").write_bytes(raw[: len(raw) // 2])  # the first page's offset lies past the end
    f["trunc_tif"] = str(d / "trunc_img.tif")
    f["pose_bad"] = _write_json(d / "pose.json", {"schema": "stereodrr.pose/1", "rotation": "x"})
    (d / "far.tra").write_text("1,0,0,100000,0,1,0,0,0,0,1,0,0,0,0,1\n")  # 100 m beside the rig
    f["tra_far"] = str(d / "far.tra")

    base = {"seed": 0, "subject": {"kind": "torso", "size": [16, 12, 10], "spacing_mm": 12.0},
            "rig": {"detector_px": [[16, 12]], "pixel_spacing_mm": 8.0}}

    def config(name: str, **edits) -> None:
        cfg = json.loads(json.dumps(base))
        for key, value in edits.items():
            section, _, sub = key.partition("__")
            if sub:
                cfg.setdefault(section, {})[sub] = value
            else:
                cfg[section] = value
        f[name] = _write_json(d / f"{name}.json", cfg)

    # Trial files (beads, track): the wrist sample's calibrations and volumes with bad frames or lists.
    wrist = Path(__file__).resolve().parent / "data" / "autoscoper_wrist"
    small = d / "small_frames"
    small.mkdir()
    for k in range(2):
        (small / f"f.{k:04d}.tif").write_bytes((d / "img.tif").read_bytes())
    short = d / "short_frames"
    short.mkdir()
    (short / "f.0000.tif").write_bytes((d / "img.tif").read_bytes())
    cams = [f"mayaCam_csv {wrist}/Calibration/xr_calib_wrist_cam0{k}.txt" for k in (1, 2)]
    volume = [f"VolumeFile {wrist}/Models/rad_dcm_cropped.tif", "VoxelSize 0.39625 0.39625 0.625"]

    def trial(name: str, lines: list[str]) -> None:
        (d / f"{name}.cfg").write_text("\n".join(lines) + "\n")
        f[name] = str(d / f"{name}.cfg")

    f["wrist_trial"] = str(wrist / "wrist.cfg")
    trial("trial_frame_size", [*cams, f"CameraRootDir {small}", f"CameraRootDir {small}", *volume])
    trial("trial_frame_count", [*cams, f"CameraRootDir {small}", f"CameraRootDir {short}", *volume])
    trial("trial_no_frames", [*cams, f"CameraRootDir {d / 'nowhere'}", f"CameraRootDir {small}", *volume])
    trial("trial_no_volume_file", [*cams, f"CameraRootDir {small}", f"CameraRootDir {small}",
                                   f"VolumeFile {d / 'none.tif'}", "VoxelSize 1 1 1"])
    trial("trial_no_voxel_size", [*cams, f"CameraRootDir {small}", f"CameraRootDir {small}", volume[0]])
    trial("trial_missing_camera", [f"mayaCam_csv {d / 'none.txt'}", cams[1], f"CameraRootDir {small}",
                                   f"CameraRootDir {small}", *volume])
    trial("trial_bad_camera", [f"mayaCam_csv {f['malformed']}", cams[1], f"CameraRootDir {small}",
                               f"CameraRootDir {small}", *volume])

    config("cfg")
    config("cfg_blur", detector__blur_px=1e6)
    config("cfg_step", render__step_mm=1e-7)
    config("cfg_seed", seed=2**80)
    config("cfg_pitch", rig__pixel_spacing_mm=1e-6)
    config("cfg_huge", rig__detector_px=[[100000, 100000]])
    config("cfg_nan_range", rig__sid_mm=[float("nan"), 760])
    config("cfg_unknown", rigg={})
    config("cfg_trunc_subject", subject={"kind": "volume", "path": f["trunc_nii"]})
    config("cfg_folder_subject", subject={"kind": "phantom", "path": f["folder"]})
    config("cfg_bad_subject", subject={"kind": "phantom", "path": f["phantom_bad_type"]})
    config("cfg_voxel_tiny", subject={"kind": "torso", "size": [16, 12, 10], "spacing_mm": 1e-300})
    config("cfg_readout_huge", detector__electronic_sigma=1e308)
    return f


def _cases() -> list[tuple[str, list[str]]]:
    """(id, argv with {placeholders} for files and OUT for an output folder holding a file)."""
    c: list[tuple[str, list[str]]] = []
    # rig: only numbers and outputs
    c += [("rig-disparity-negative", ["rig", "--disparity-error", "-1", "-o", "OUT/rig.json"]),
          ("rig-disparity-huge", ["rig", "--disparity-error", "1e308", "-o", "OUT/rig.json"]),
          ("rig-figure-not-an-image", ["rig", "--figure", "OUT/fig.txt", "-o", "OUT/rig.json"]),
          ("rig-sdd-inf", ["rig", "--sdd", "inf", "-o", "OUT/rig.json"]),
          ("rig-sdd-nan", ["rig", "--sdd", "nan", "-o", "OUT/rig.json"]),
          ("rig-sid-over-sdd", ["rig", "--sid", "1300", "-o", "OUT/rig.json"]),
          ("rig-pixel-tiny", ["rig", "--pixel", "1e-6", "-o", "OUT/rig.json"]),
          ("rig-size-zero", ["rig", "--size", "0", "5", "-o", "OUT/rig.json"]),
          ("rig-size-text", ["rig", "--size", "a", "5", "-o", "OUT/rig.json"]),
          ("rig-arc-one-view", ["rig", "--kind", "arc", "--views", "1", "-o", "OUT/rig.json"]),
          ("rig-biplanar-angle", ["rig", "--kind", "biplanar", "--angle", "60", "-o", "OUT/rig.json"]),
          ("rig-views-not-arc", ["rig", "--views", "4", "-o", "OUT/rig.json"]),
          ("rig-angle-negative", ["rig", "--angle", "-5", "-o", "OUT/rig.json"]),
          ("rig-out-folder", ["rig", "-o", "OUT"]),
          ("rig-out-under-file", ["rig", "-o", "{under_file}"]),
          ("rig-dlt-under-file", ["rig", "-o", "OUT/rig.json", "--dlt", "{under_file}"]),
          ("rig-unknown-option", ["rig", "--angel", "5"])]
    # phantom
    for bad in ("missing", "folder", "empty", "corrupt_json", "malformed", "json_list", "phantom_bad_type",
                "phantom_nan", "phantom_negative"):
        c.append((f"phantom-definition-{bad}", ["phantom", f"{{{bad}}}", "-o", "OUT"]))
    c += [("phantom-unknown-builtin", ["phantom", "no_such_phantom", "-o", "OUT"]),
          ("phantom-translate-huge", ["phantom", "{phantom}", "--translate", "1e308", "0", "0", "-o", "OUT"]),
          ("phantom-supersample-huge", ["phantom", "{phantom}", "--supersample", "1000", "-o", "OUT"]),
          ("phantom-spacing-zero", ["phantom", "{phantom}", "--spacing", "0", "-o", "OUT"]),
          ("phantom-spacing-two", ["phantom", "{phantom}", "--spacing", "1", "2", "-o", "OUT"]),
          ("phantom-grid-huge", ["phantom", "{phantom}", "--spacing", "0.001", "-o", "OUT"]),
          ("phantom-grid-uncountable", ["phantom", "{phantom}", "--spacing", "1e-300", "-o", "OUT"]),
          ("phantom-margin-huge", ["phantom", "{phantom}", "--margin", "1e300", "-o", "OUT"]),
          ("phantom-size-huge", ["phantom", "{phantom}", "--size", "100000", "100000", "100000", "-o", "OUT"]),
          ("phantom-energy", ["phantom", "{phantom}", "--energy", "5", "-o", "OUT"]),
          ("phantom-out-file", ["phantom", "{phantom}", "-o", "{file}"]),
          ("phantom-out-under-file", ["phantom", "{phantom}", "-o", "{under_file}"])]
    # render
    for bad in ("missing", "folder", "empty", "malformed", "json_list", "corrupt_json", "rig_nan",
                "rig_not_rotation", "rig_negative", "rig_type", "rig_schema", "rig_huge"):
        c.append((f"render-rig-{bad}", ["render", "--ct", "{ct}", "--rig", f"{{{bad}}}", "-o", "OUT"]))
    for bad in ("missing", "folder", "empty", "corrupt_mha", "corrupt_nii", "trunc_mha", "trunc_nii",
                "ct_nan", "ct_2d", "malformed"):
        c.append((f"render-ct-{bad}", ["render", "--ct", f"{{{bad}}}", "--rig", "{rig}", "-o", "OUT"]))
    for bad in ("missing", "folder", "malformed", "phantom_nan"):
        c.append((f"render-phantom-{bad}", ["render", "--phantom", f"{{{bad}}}", "--rig", "{rig}", "-o", "OUT"]))
    c += [("render-no-input", ["render", "--rig", "{rig}", "-o", "OUT"]),
          ("render-voxel-tiny", ["render", "--phantom", "{phantom}", "--rig", "{rig}", "--voxel", "1e-300", "-o", "OUT"]),
          ("render-step-tiny", ["render", "--ct", "{ct}", "--rig", "{rig}", "--step", "1e-7", "-o", "OUT"]),
          ("render-step-with-exact", ["render", "--ct", "{ct}", "--rig", "{rig}", "--mode", "exact", "--step", "1",
                                      "-o", "OUT"]),
          ("render-seed-without-noise", ["render", "--ct", "{ct}", "--rig", "{rig}", "--seed", "5", "-o", "OUT"]),
          ("render-energy-nan", ["render", "--ct", "{ct}", "--rig", "{rig}", "--energy", "nan", "-o", "OUT"]),
          ("render-out-file", ["render", "--ct", "{ct}", "--rig", "{rig}", "-o", "{file}"]),
          ("render-device-unknown", ["render", "--ct", "{ct}", "--rig", "{rig}", "--device", "gpu", "-o", "OUT"]),
          ("render-device-absent", ["render", "--ct", "{ct}", "--rig", "{rig}", "--device", "cuda:99", "-o", "OUT"]),
          ("phantom-device-unknown", ["phantom", "{phantom}", "--device", "gpu", "-o", "OUT"]),
          ("render-out-under-file", ["render", "--ct", "{ct}", "--rig", "{rig}", "-o", "{under_file}"])]
    # dataset
    for bad in ("missing", "folder", "empty", "malformed", "json_list", "corrupt_json", "cfg_blur", "cfg_step",
                "cfg_seed", "cfg_pitch", "cfg_huge", "cfg_nan_range", "cfg_unknown", "cfg_trunc_subject",
                "cfg_folder_subject", "cfg_bad_subject", "cfg_voxel_tiny", "cfg_readout_huge"):
        c.append((f"dataset-config-{bad}", ["dataset", "--config", f"{{{bad}}}", "-o", "OUT", "--n", "2",
                                            "--workers", "0", "--quiet"]))
    c += [("dataset-n-negative", ["dataset", "--config", "{cfg}", "-o", "OUT", "--n", "-1"]),
          ("dataset-n-huge", ["dataset", "--config", "{cfg}", "-o", "OUT", "--n", str(2**80)]),
          ("dataset-shard", ["dataset", "--config", "{cfg}", "-o", "OUT", "--n", "2", "--shard", "3/2"]),
          ("dataset-scheduler-unreachable", ["dataset", "--config", "{cfg}", "-o", "EMPTY", "--n", "2",
                                             "--scheduler", "tcp://127.0.0.1:{free_port}", "--quiet"]),
          ("dataset-out-file", ["dataset", "--config", "{cfg}", "-o", "{file}", "--n", "2", "--workers", "0"]),
          ("dataset-out-not-a-dataset", ["dataset", "--config", "{cfg}", "-o", "OUT", "--n", "2", "--workers", "0"])]
    # calibrate
    calib = ["calibrate", "--phantom", "{phantom}", "--rig", "{rig}", "-o", "OUT", "--images"]
    for bad in ("missing", "folder", "empty", "corrupt_tif", "trunc_tif", "img_wrong_size", "img_rgb"):
        c.append((f"calibrate-images-{bad}", [*calib, "{img}", f"{{{bad}}}"]))
    c += [("calibrate-images-constant", [*calib, "{img}", "{img}"]),
          ("calibrate-images-count", [*calib, "{img}"]),
          ("calibrate-rig-malformed", ["calibrate", "--phantom", "{phantom}", "--rig", "{malformed}", "-o", "OUT",
                                       "--images", "{img}", "{img}"]),
          ("calibrate-phantom-no-markers", ["calibrate", "--phantom", "{phantom_no_markers}", "--rig", "{rig}",
                                            "-o", "OUT", "--images", "{img}", "{img}"]),
          ("calibrate-threshold-negative", [*calib, "{img}", "{img}", "--threshold", "-1"]),
          ("calibrate-distortion-count", [*calib, "{img}", "{img}", "--distortion", "{malformed}"]),
          ("calibrate-distortion-missing", [*calib, "{img}", "{img}", "--distortion", "{missing}", "{missing}"]),
          ("calibrate-distortion-malformed", [*calib, "{img}", "{img}", "--distortion", "{malformed}",
                                              "{malformed}"]),
          ("calibrate-distortion-not-a-map", [*calib, "{img}", "{img}", "--distortion", "{rig}", "{rig}"]),
          ("calibrate-out-file", ["calibrate", "--phantom", "{phantom}", "--rig", "{rig}", "-o", "{file}",
                                  "--images", "{img}", "{img}"])]
    # demo
    c += [("demo-size-huge", ["demo", "--size", "100000", "100000", "-o", "OUT"]),
          ("demo-photons-zero", ["demo", "--photons", "0", "-o", "OUT"]),
          ("demo-blur-negative", ["demo", "--blur", "-1", "-o", "OUT"]),
          ("demo-blur-huge", ["demo", "--blur", "1e6", "-o", "OUT"]),
          ("demo-readout-huge", ["demo", "--electronic-noise", "1e308", "-o", "OUT"]),
          ("demo-pixel-zero", ["demo", "--pixel", "0", "-o", "OUT"]),
          ("demo-angle-nan", ["demo", "--angle", "nan", "-o", "OUT"]),
          ("demo-seed-negative", ["demo", "--seed", "-3", "-o", "OUT"]),
          ("demo-phantom-malformed", ["demo", "--phantom", "{malformed}", "-o", "OUT"]),
          ("demo-phantom-folder", ["demo", "--phantom", "{folder}", "-o", "OUT"]),
          ("demo-phantom-no-markers", ["demo", "--phantom", "{phantom_no_markers}", "--size", "64", "64", "--pixel",
                                       "2", "-o", "OUT"]),
          # the balls too small to find: the calibration fails after the rendering, and an earlier
          # run's images, rigs and report in the folder stay as they were
          ("demo-calibration-fails", ["demo", "--size", "8", "8", "--pixel", "5", "-o", "OUT"]),
          ("demo-out-file", ["demo", "-o", "{file}"]),
          ("demo-out-under-file", ["demo", "-o", "{under_file}"])]
    # register
    reg = ["register", "--rig", "{rig}", "-o", "OUT", "--quiet"]
    for bad in ("missing", "folder", "empty", "corrupt_mha", "trunc_mha", "trunc_nii", "ct_nan", "ct_2d"):
        c.append((f"register-ct-{bad}", [*reg, "--ct", f"{{{bad}}}", "--images", "{img_f}", "{img_f}"]))
    for bad in ("missing", "folder", "empty", "corrupt_tif", "trunc_tif", "img_wrong_size", "img_rgb"):
        c.append((f"register-images-{bad}", [*reg, "--ct", "{ct}", "--images", "{img_f}", f"{{{bad}}}"]))
    c += [("register-images-constant", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}"]),
          ("register-device-absent", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--device", "cuda:99"]),
          ("register-images-count", [*reg, "--ct", "{ct}", "--images", "{img_f}"]),
          ("register-threads-zero", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--threads", "0"]),
          ("register-rig-huge", ["register", "--rig", "{rig_huge}", "-o", "OUT", "--ct", "{ct}", "--images", "{img_f}",
                                 "{img_f}"]),
          ("register-rig-not-rotation", ["register", "--rig", "{rig_not_rotation}", "-o", "OUT", "--ct", "{ct}",
                                         "--images", "{img_f}", "{img_f}"]),
          ("register-lr-rotation-huge", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--lr-rotation",
                                         "1e308"]),
          ("register-init-bad", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--init", "{pose_bad}"]),
          ("register-init-malformed", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--init",
                                       "{malformed}"]),
          ("register-levels-bad", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--levels", "x:y"]),
          ("register-levels-zero-iterations", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--levels", "4:0"]),
          ("register-distortion-count", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--distortion",
                                         "{malformed}"]),
          ("register-distortion-not-a-map", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--distortion",
                                             "{rig}", "{rig}"]),
          ("register-route-without-maps", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}",
                                           "--distortion-route", "correct"]),
          ("register-lr-negative", [*reg, "--ct", "{ct}", "--images", "{img_f}", "{img_f}", "--lr-rotation", "-1"]),
          ("register-out-file", ["register", "--rig", "{rig}", "-o", "{file}", "--ct", "{ct}", "--images",
                                 "{img_f}", "{img_f}"])]
    # beads: trial files that do not hold a trial
    for bad in ("missing", "folder", "empty", "corrupt", "malformed", "trial_frame_size", "trial_frame_count",
                "trial_no_frames", "trial_no_volume_file", "trial_no_voxel_size", "trial_missing_camera",
                "trial_bad_camera"):
        c.append((f"beads-trial-{bad}", ["beads", "--trial", f"{{{bad}}}", "-o", "OUT"]))
    bd = ["beads", "--trial", "{wrist_trial}", "-o", "OUT", "--distortion"]
    c += [("beads-distortion-count", [*bd, "{malformed}"]),
          ("beads-distortion-missing", [*bd, "{missing}", "{missing}"]),
          ("beads-distortion-malformed", [*bd, "{malformed}", "{malformed}"]),
          ("beads-distortion-not-a-map", [*bd, "{rig}", "{rig}"]),
          ("track-distortion-count", ["track", "--trial", "{wrist_trial}", "--volume", "0", "-o", "OUT",
                                      "--distortion", "{malformed}", "{malformed}", "{malformed}"])]
    c += [("beads-frames-text", ["beads", "--trial", "{trial_frame_size}", "--frames", "a:b", "-o", "OUT"]),
          ("beads-out-file", ["beads", "--trial", "{trial_frame_size}", "-o", "{file}"])]
    # track: trial files that do not hold a trial, then a good trial with bad choices
    for bad in ("missing", "folder", "empty", "corrupt", "malformed", "trial_frame_size", "trial_frame_count",
                "trial_no_frames", "trial_no_volume_file", "trial_no_voxel_size", "trial_missing_camera",
                "trial_bad_camera"):
        c.append((f"track-trial-{bad}", ["track", "--trial", f"{{{bad}}}", "--volume", "0", "-o", "OUT"]))
    trk = ["track", "--trial", "{wrist_trial}", "-o", "OUT"]
    c += [("track-volume-out-of-range", [*trk, "--volume", "9"]),
          ("track-volume-negative", [*trk, "--volume", "-1"]),
          ("track-volume-twice", [*trk, "--volume", "0", "0"]),
          ("track-init-count", [*trk, "--volume", "0", "1", "--init", "{pose_bad}"]),
          ("track-init-missing", [*trk, "--volume", "0", "--init", "{missing}"]),
          ("track-init-malformed", [*trk, "--volume", "0", "--init", "{malformed}"]),
          ("track-init-bad", [*trk, "--volume", "0", "--init", "{pose_bad}"]),
          ("track-init-outside", [*trk, "--volume", "0", "--init", "{tra_far}"]),
          ("track-frames-text", [*trk, "--volume", "0", "--frames", "a:b"]),
          ("track-frames-beyond", [*trk, "--volume", "0", "--frames", "7"]),
          ("track-passes-negative", [*trk, "--volume", "0", "--passes", "-1"]),
          ("track-min-in-field-above-one", [*trk, "--volume", "0", "--min-in-field", "1.5"]),
          ("track-device-unknown", [*trk, "--volume", "0", "--device", "gpu"]),
          ("track-device-absent", [*trk, "--volume", "0", "--device", "cuda:99"]),
          ("track-out-file", ["track", "--trial", "{wrist_trial}", "--volume", "0", "-o", "{file}"])]
    # distortion and undistort
    for bad in ("missing", "folder", "empty", "corrupt_tif", "trunc_tif", "img_rgb", "img", "img_f"):
        c.append((f"distortion-grid-{bad}", ["distortion", "--grid", f"{{{bad}}}", "-o", "OUT"]))
    for bad in ("missing", "folder", "empty", "malformed", "json_list", "rig"):
        c.append((f"undistort-map-{bad}", ["undistort", "--distortion", f"{{{bad}}}", "--images", "{img}",
                                           "-o", "OUT"]))
    return c


CASES = _cases()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timeout(signum, frame):  # pragma: no cover - only on a hang
    raise TimeoutError(f"case ran past {CASE_SECONDS} s")


@pytest.mark.parametrize("case_id, argv", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case_id, argv, files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / SENTINEL).write_text("the user's file")
    empty = tmp_path / "empty_out"
    subs = {**files, "free_port": str(_free_port())}
    args = [a.replace("OUT", str(out)).replace("EMPTY", str(empty)).format(**subs) for a in argv]
    # A small memory budget: a case that slipped past the checks would be refused, not swap.
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "2G")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(CASE_SECONDS)
    try:
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    err = capsys.readouterr().err
    if os.environ.get("FUZZ_SHOW"):
        with capsys.disabled():
            print(f"\n{case_id} rc={rc}: {err.strip()}")
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")
             and "\r" not in ln and "/s]" not in ln]  # tqdm bars
    assert rc not in (0, None), f"{case_id}: succeeded on garbage\n{err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and ": error: " in lines[0], f"{case_id}: expected one error line, got\n{err}"
    assert grown < CASE_MEMORY, f"{case_id}: peak memory grew by {grown / 2**20:.0f} MiB"
    assert sorted(p.name for p in out.iterdir()) == [SENTINEL], f"{case_id}: wrote into the output folder"
    assert not empty.exists() or not any(empty.iterdir()), f"{case_id}: wrote into a new output folder"


def test_debug_shows_the_traceback(files, capsys):
    assert main(["--debug", "render", "--ct", files["trunc_nii"], "--rig", files["rig"], "-o",
                 files["folder"]]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "truncated" in err
    assert main(["render", "--ct", files["trunc_nii"], "--rig", files["rig"], "-o", files["folder"],
                 "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_unwritable_output_folder(files, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["rig", "-o", str(ro / "rig.json")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_truncated_tiff_is_one_line_error(files, tmp_path):
    """tifffile logs a page offset past the end of a cut file (pytest's log capture hides that
    line from the cases above, so this runs the console script): the error is that one line."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "stereodrr", "distortion", "--grid", files["trunc_tif"], "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=CASE_SECONDS)
    assert out.returncode == 1 and not (tmp_path / "out").exists()
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stereodrr distortion: error: {files['trunc_tif']}: a truncated "
                                                   "or corrupt TIFF (") and "invalid offset to first page" in lines[0], \
        out.stderr


@pytest.mark.parametrize("count", ["100000", str(10**20)])
def test_register_thread_count_is_bounded(files, tmp_path, capsys, count):
    """torch's pool takes any count: 1e5 threads crashed the process at its first parallel
    operation, 1e20 overflowed a C long (an error naming no option); both are usage errors."""
    with pytest.raises(SystemExit) as exit_:  # argparse's usage error
        main(["register", "--rig", files["rig"], "--ct", files["ct"], "--images", files["img_f"], files["img_f"],
              "-o", str(tmp_path / "out"), "--threads", count])
    rc = exit_.value.code
    err = capsys.readouterr().err
    assert rc == 2 and f"argument --threads: expected an integer (thread count) in [1, 1024], got '{count}'" in err

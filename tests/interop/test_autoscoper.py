"""Autoscoper's trial files, frame folders, volume placement and tracking results, checked
against transliterations of Autoscoper's own code (tests/interop/autoscoper_readers.py)."""

import itertools
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stereodrr.geometry import rotvec_to_matrix
from stereodrr.interop import (
    AutoscoperTrialFile,
    AutoscoperVolumeEntry,
    frame_files,
    load_autoscoper_volume,
    load_tra,
    matrix_to_xyzypr,
    read_trial_file,
    save_tra,
    write_trial_file,
    xyzypr_to_matrix,
)

from .autoscoper_readers import (
    CoordFrame,
    load_tracking_results,
    parse_trial,
    save_tracking_results,
    video_files,
    volume_flips,
    volume_sample_index,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"


def _sample_wrist_cfg(root: Path) -> str:
    """The trial file ``on_actionOpen_Sample_Wrist_triggered`` writes (AutoscoperMainWindow.cpp
    2189-2243): no Version line, absolute paths, four volumes, the resolution after the last."""
    r = str(root) + "/"
    vol = ["VolumeFlip 0 0 0", "VoxelSize 0.39625 0.39625 0.625"]
    lines = [f"mayaCam_csv {r}Calibration/xr_calib_wrist_cam01.txt", f"mayaCam_csv {r}Calibration/xr_calib_wrist_cam02.txt",
             f"CameraRootDir {r}XMA_UND/xr_data_wrist_cam01", f"CameraRootDir {r}XMA_UND/xr_data_wrist_cam02"]
    for name in ("rad_dcm_cropped", "mc2_mc3_dcm_cropped", "mc3_dcm_cropped", "uln_dcm_cropped"):
        lines += [f"VolumeFile {r}Models/{name}.tif", *vol]
    lines += ["RenderResolution 512 512", "OptimizationOffsets 0.1 0.1 0.1 0.1 0.1 0.1"]
    return "\n".join(lines)  # no newline after the last line, as the action writes it


def test_sample_wrist_trial_file_reads_as_autoscoper_reads_it(tmp_path):
    text = _sample_wrist_cfg(DATA.resolve())
    (tmp_path / "wrist.cfg").write_text(text)
    version, lists = parse_trial(text, str(tmp_path / "wrist.cfg"))
    t = read_trial_file(tmp_path / "wrist.cfg")
    assert version == [1, 0] and t.version == (1, 0)
    assert [str(p) for p in t.cameras] == lists["mayaCam_csv"]
    assert [str(p) for p in t.camera_dirs] == lists["CameraRootDir"]
    assert [str(v.path) for v in t.volumes] == lists["VolumeFile"]
    assert all(v.voxel_size == (0.39625, 0.39625, 0.625) and v.flip == (False,) * 3 for v in t.volumes)
    assert t.render_resolution == (512, 512) and t.optimization_offsets == (0.1,) * 6


@pytest.mark.parametrize("version", ["Version 1.1", "Version 1.2", "Version 2.0", ""])
def test_trial_file_saved_on_windows_reads_as_autoscoper_reads_it(tmp_path, monkeypatch, version):
    """Backslashes (Trial::save's relative paths on Windows) and doubled separators become single
    slashes for cameras, camera folders and volumes (Trial.cpp 152-171, 224-235); relative paths
    are the file's folder's in 1.1 and later 1.x only (line 127)."""
    text = "\n".join([version, "mayaCam_csv Calibration\\xr_calib_wrist_cam01.txt",
                      "CameraRootDir XMA_UND\\\\xr_data_wrist_cam01\\", "VolumeFile Models\\rad_dcm_cropped.tif",
                      "VoxelSize 0.39625 0.39625 0.625"])
    (tmp_path / "w.cfg").write_text(text)
    monkeypatch.chdir(tmp_path)  # Autoscoper's working directory for the versions that leave paths to it
    _, lists = parse_trial(text, str(tmp_path / "w.cfg"))
    t = read_trial_file(tmp_path / "w.cfg")
    assert [str(p) for p in t.cameras] == lists["mayaCam_csv"]
    assert [str(p) for p in t.camera_dirs] == lists["CameraRootDir"]
    assert [str(v.path) for v in t.volumes] == lists["VolumeFile"]
    assert lists["CameraRootDir"][0].endswith("XMA_UND/xr_data_wrist_cam01")


def test_written_trial_file_reads_in_autoscoper(tmp_path):
    spec = AutoscoperTrialFile(
        cameras=[DATA / "Calibration" / "xr_calib_wrist_cam01.txt", DATA / "Calibration" / "xr_calib_wrist_cam02.txt"],
        camera_dirs=[DATA / "XMA_UND" / "xr_data_wrist_cam01", DATA / "XMA_UND" / "xr_data_wrist_cam02"],
        volumes=[AutoscoperVolumeEntry(DATA / "Models" / "rad_dcm_cropped.tif", (0.39625, 0.39625, 0.625), (True, False, True)),
                 AutoscoperVolumeEntry(DATA / "Models" / "uln_dcm_cropped.tif", (0.5, 0.5, 1.25))],
        render_resolution=(640, 480), optimization_offsets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6))
    out = tmp_path / "sub" / "trial.cfg"
    write_trial_file(spec, out)
    version, lists = parse_trial(out.read_text(), str(out))
    assert version == [1, 1]
    resolve = lambda p: str(Path(p).resolve())  # noqa: E731
    assert [resolve(p) for p in lists["mayaCam_csv"]] == [resolve(p) for p in spec.cameras]
    assert [resolve(p) for p in lists["CameraRootDir"]] == [resolve(p) for p in spec.camera_dirs]
    assert [resolve(p) for p in lists["VolumeFile"]] == [resolve(v.path) for v in spec.volumes]
    assert lists["VolumeFlip"] == ["1 0 1", "0 0 0"]
    assert [[float(x) for x in s.split()] for s in lists["VoxelSize"]] == [[0.39625, 0.39625, 0.625], [0.5, 0.5, 1.25]]
    assert lists["RenderResolution"] == ["640 480"]
    back = read_trial_file(out)
    assert [v.flip for v in back.volumes] == [(True, False, True), (False, False, False)]
    assert back.optimization_offsets == spec.optimization_offsets
    # With meshes: Version 1.2, the first version whose meshes Autoscoper loads (Trial.cpp 147-149).
    write_trial_file(replace(spec, meshes=[DATA / "m1.stl", DATA / "m2.stl"]), out)
    version, lists = parse_trial(out.read_text(), str(out))
    assert version == [1, 2] and [resolve(p) for p in lists["MeshFile"]] == [resolve(DATA / "m1.stl"), resolve(DATA / "m2.stl")]


def test_trial_file_on_another_drive_names_its_data_absolutely(tmp_path, monkeypatch):
    """On Windows no relative path leads to another drive (os.path.relpath raises): the trial
    then names the data absolutely, which Trial::toAbsolutePath (Trial.cpp 180-188) keeps."""
    def no_relative(path, start=None):
        raise ValueError("path is on mount 'D:', start on mount 'C:'")
    monkeypatch.setattr(os.path, "relpath", no_relative)
    spec = AutoscoperTrialFile(cameras=[DATA / "Calibration" / "xr_calib_wrist_cam01.txt"],
                               camera_dirs=[DATA / "XMA_UND" / "xr_data_wrist_cam01"],
                               volumes=[AutoscoperVolumeEntry(DATA / "Models" / "rad_dcm_cropped.tif", (1.0, 1.0, 1.0))])
    out = tmp_path / "trial.cfg"
    write_trial_file(spec, out)
    _, lists = parse_trial(out.read_text(), str(out))
    assert lists["mayaCam_csv"] == [os.path.abspath(spec.cameras[0]).replace(os.sep, "/")]
    assert lists["VolumeFile"] == [os.path.abspath(spec.volumes[0].path).replace(os.sep, "/")]


@pytest.mark.parametrize("lines, match", [
    (["CameraRootDir a", "VolumeFile v.tif", "VoxelSize 1 1 1"], "at least one mayaCam_csv"),
    (["mayaCam_csv c.txt", "VolumeFile v.tif", "VoxelSize 1 1 1"], "one CameraRootDir per camera"),
    (["mayaCam_csv c.txt", "CameraRootDir a"], "at least one VolumeFile"),
    (["mayaCam_csv c.txt", "CameraRootDir a", "VolumeFile v.tif"], "one VoxelSize per volume"),
    (["mayaCam_csv c.txt", "CameraRootDir a", "VolumeFile v.tif", "VoxelSize 1 x 1"], "VoxelSize"),
    (["mayaCam_csv c.txt", "CameraRootDir a", "VolumeFile v.tif", "VoxelSize 1 0 1"], "positive"),
    (["mayaCam_csv c.txt", "CameraRootDir a", "VolumeFile v.tif", "VoxelSize 1 1 1", "VolumeFlip x 0 1"], "VolumeFlip"),
])
def test_malformed_trial_files_give_one_line_errors(tmp_path, lines, match):
    (tmp_path / "t.cfg").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match) as info:
        read_trial_file(tmp_path / "t.cfg")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("line", ["VolumeFlip 1", "VolumeFlip 1 0", "VolumeFlip 0 1", "VolumeFlip 1 1 1",
                                  "VolumeFlip 0 0 1", "VolumeFlip 1 0 0 ", "VolumeFlip ", "VolumeFlip"])
def test_short_volume_flips_read_as_autoscoper_streams_them(tmp_path, line):
    """Trial.cpp streams up to three ints into zeros (``Trial::loadVolumes``, Trial.cpp 333-337):
    ``VolumeFlip 1`` flips x alone. A ``VolumeFlip`` line with no value, with or without its
    space, is kept as an empty value (``Trial::parse`` 236-238: the key read up to the first
    space, ``GetLineFromStream`` of the rest gives ``""``) and flips nothing."""
    lines = ["mayaCam_csv c.txt", "CameraRootDir a", "VolumeFile v.tif", "VoxelSize 1 1 1", line]
    (tmp_path / "t.cfg").write_text("\n".join(lines) + "\n")
    _, lists = parse_trial((tmp_path / "t.cfg").read_text(), str(tmp_path / "t.cfg"))
    got = read_trial_file(tmp_path / "t.cfg", volumes=True).volumes[0].flip
    assert got == tuple(bool(f) for f in volume_flips(lists["VolumeFlip"][0]))


def test_frame_discovery_follows_autoscoper(tmp_path):
    names = ["b.0002.tif", "b.0010.tif", "a.tiff", ".hidden.tif", "c.TIF", "d.png", "e.tif.bak", "f.tifx", "noext",
             "tif0001"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert [str(p) for p in frame_files(tmp_path)] == video_files(str(tmp_path))
    assert [p.name for p in frame_files(tmp_path)] == ["a.tiff", "b.0002.tif", "b.0010.tif", "f.tifx", "tif0001"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no TIFF"):
        frame_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        frame_files(tmp_path / "missing")


@pytest.mark.parametrize("flip", list(itertools.product([False, True], repeat=3)))
def test_volume_lies_where_autoscopers_ray_caster_samples_it(tmp_path, flip):
    rng = np.random.default_rng(3)
    depth, height, width = 7, 9, 11
    data = np.zeros((depth, height, width), np.uint16)
    data[1:6, 2:8, 3:10] = rng.integers(1, 4000, size=(5, 6, 7))  # a cropped bone: zero margins of unequal width
    tifffile.imwrite(tmp_path / "v.tif", data)
    size = (0.4, 0.5, 0.7)
    vol = load_autoscoper_volume(tmp_path / "v.tif", size, flip)
    flipped = data[::-1 if flip[2] else 1, ::-1 if flip[1] else 1, ::-1 if flip[0] else 1]
    np.testing.assert_array_equal(vol.data.numpy(), flipped.astype(np.float32))
    nz = np.nonzero(flipped)
    bounds = ([nz[2].min(), nz[1].min(), nz[0].min()], [nz[2].max(), nz[1].max(), nz[0].max()])
    lo, hi = vol.bounding_box()
    obj = lo + rng.uniform(size=(30, 3)) * (hi - lo)
    ours = vol.world_to_index(obj)
    theirs = np.array([volume_sample_index(width, height, depth, size, flip, bounds, o) for o in obj])
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


def test_real_volume_is_read_with_its_trial_voxel_size():
    vol = load_autoscoper_volume(DATA / "Models" / "rad_dcm_cropped.tif", (0.39625, 0.39625, 0.625))
    assert vol.size == (68, 86, 128) and float(vol.data.max()) == 4095.0
    np.testing.assert_allclose(vol.spacing, (0.39625, 0.39625, 0.625))
    np.testing.assert_allclose(np.linalg.det(vol.direction), 1.0)
    with pytest.raises(ValueError, match="voxel_size"):
        load_autoscoper_volume(DATA / "Models" / "rad_dcm_cropped.tif", (0.4, 0.4))
    with pytest.raises(ValueError, match="TIFF"):
        load_autoscoper_volume(DATA / "SOURCE.md", (1, 1, 1))


@pytest.mark.parametrize("keep", [100_000, 196_824])
def test_truncated_volume_is_refused_not_read_as_fewer_slices(tmp_path, capfd, keep):
    """tifffile reads a cut stack's pages up to the cut and logs the broken page offset: the
    volume would have lost its last slices without a word (26 of 128 at 100 kB)."""
    cut = tmp_path / "cut.tif"
    cut.write_bytes((DATA / "Models" / "rad_dcm_cropped.tif").read_bytes()[:keep])
    with pytest.raises(ValueError, match=r"cut\.tif: a truncated or corrupt TIFF \(.*invalid page offset"):
        load_autoscoper_volume(cut, (0.39625, 0.39625, 0.625))
    assert capfd.readouterr().err == ""  # tifffile's log line is the error's, not a second line on stderr


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    out = np.full((n, 4, 4), np.nan)
    for f in range(n):
        if f % 3 == 1:
            continue  # untracked
        out[f] = np.eye(4)
        out[f, :3, :3] = rotvec_to_matrix(rng.normal(scale=1.0, size=3))
        out[f, :3, 3] = rng.normal(scale=100, size=3)
    return out


def test_tra_written_is_what_autoscoper_loads(tmp_path):
    poses = _poses(7)
    save_tra(poses, tmp_path / "a.tra")
    frames = load_tracking_results(tmp_path / "a.tra", num_frames=7)
    for f, (cell,) in enumerate(frames):
        if np.isnan(poses[f]).all():
            assert cell is None
            continue
        M = poses[f]
        np.testing.assert_allclose(np.reshape(cell.rotation_, (3, 3)), M[:3, :3].T, atol=1e-15)
        np.testing.assert_allclose(cell.translation_, M[:3, 3], atol=1e-12)
    two = np.stack([poses, _poses(7, 1)], axis=1)
    save_tra(two, tmp_path / "two.tra")
    both = load_tracking_results(tmp_path / "two.tra", num_frames=7, n_volumes=2)
    assert both[0][1] is not None and both[1][0] is None
    np.testing.assert_allclose(both[0][1].translation_, two[0, 1, :3, 3], atol=1e-12)


@pytest.mark.parametrize("as_matrix, commas, rows", [(True, True, True), (True, False, True), (False, True, True),
                                                     (False, False, True), (True, True, False), (True, False, False)])
def test_tra_written_by_autoscoper_reads_here(tmp_path, as_matrix, commas, rows):
    """Every layout of Autoscoper's export (``save_tracking_results``, AutoscoperMainWindow.cpp
    736-839) reads as the pose Autoscoper loads back from it with the same options
    (``load_tracking_results`` 984-1106), the "Column" orientation (lines 812-815: the
    column-major ``CoordFrame::to_matrix`` as it is) included: its translation is the last row."""
    rng = np.random.default_rng(5)
    frames = [None if f == 2 else [*rng.normal(scale=50, size=3), *rng.uniform(-170, 170, 3) * [1, 0.5, 1]]
              for f in range(5)]
    save_tracking_results(frames, tmp_path / "t.tra", save_as_matrix=as_matrix, save_as_rows=rows,
                          save_with_commas=commas)
    poses = load_tra(tmp_path / "t.tra")[:, 0]
    loaded = load_tracking_results(tmp_path / "t.tra", num_frames=5, save_as_matrix=as_matrix, save_as_rows=rows,
                                   save_with_commas=commas)
    for f, xyzypr in enumerate(frames):
        if xyzypr is None:
            assert np.isnan(poses[f]).all() and loaded[f][0] is None
            continue
        cf = loaded[f][0]
        np.testing.assert_allclose(cf.rotation_, CoordFrame.from_xyzypr(xyzypr).rotation_, atol=1e-12)
        np.testing.assert_allclose(poses[f, :3, :3], np.reshape(cf.rotation_, (3, 3)).T, atol=1e-12)
        np.testing.assert_allclose(poses[f, :3, 3], cf.translation_, atol=1e-12)
        np.testing.assert_allclose(xyzypr_to_matrix(xyzypr), poses[f], atol=1e-12)
        np.testing.assert_allclose(xyzypr_to_matrix(matrix_to_xyzypr(poses[f])), poses[f], atol=1e-12)


def test_tra_bad_input(tmp_path):
    with pytest.raises(ValueError, match="rigid"):
        save_tra(np.ones((2, 4, 4)), tmp_path / "x.tra")
    with pytest.raises(ValueError, match="frames"):
        save_tra(np.eye(3), tmp_path / "x.tra")
    assert not (tmp_path / "x.tra").exists()
    (tmp_path / "short.tra").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="expected 16"):
        load_tra(tmp_path / "short.tra")
    (tmp_path / "neither.tra").write_text(",".join(str(float(i)) for i in range(1, 17)) + "\n")
    with pytest.raises(ValueError, match="forming a 4x4 transform row by row"):
        load_tra(tmp_path / "neither.tra")


def test_trial_file_without_volumes_when_asked(tmp_path):
    (tmp_path / "t.cfg").write_text("mayaCam_csv c.txt\nCameraRootDir a\nVolumeFile v.tif\nVoxelSize 1 x 1\n"
                                    "MeshFile m.stl\n")
    spec = read_trial_file(tmp_path / "t.cfg", volumes=False)  # the volume lines are not read at all
    assert spec.volumes == [] and spec.meshes == [] and [p.name for p in spec.cameras] == ["c.txt"]
    (tmp_path / "t.cfg").write_text("mayaCam_csv c.txt\nCameraRootDir a\n")
    assert read_trial_file(tmp_path / "t.cfg", volumes=False).volumes == []
    with pytest.raises(ValueError, match="at least one VolumeFile"):
        read_trial_file(tmp_path / "t.cfg")

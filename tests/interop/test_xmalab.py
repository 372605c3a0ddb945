"""XMALab's 2D/3D point and rigid-body tables: stereodrr's files read by a transliteration of
XMALab's importer, and XMALab's exports (transliterated writers) read by stereodrr. Line numbers
cite XROMMPackages/xmalab at ce5f06ec09bc02aaec9151685000f8debc1de87b."""

import numpy as np
import pandas as pd
import pytest

from stereodrr.geometry import rotvec_to_matrix
from stereodrr.interop import (
    load_points2d,
    load_points3d,
    load_rigid_body_transforms,
    save_points2d,
    save_points3d,
    save_rigid_body_transforms,
)

HEIGHTS = (1760, 1024)


def xmalab_load2d_points(text, n_cameras, heights, offset1, yinvert, header_row=True, offset_cols=False):
    """``Trial::load2dPoints`` (Trial.cpp 1909-2008): split on ',', marker count from the first
    line, names from the header with ``_cam1_X`` removed, a pair skipped if either field contains
    ``NaN``, ``toDouble`` otherwise, then ``offset1`` (x-1, y-1) and ``yinvert`` (y = H - y - 1).
    Returns ``{(marker, camera, frame): (x, y)}`` in XMALab's internal pixels (0-based, y down)
    and the names."""
    lines = [line for line in text.split("\n") if line]
    offset = n_cameras if offset_cols else 0
    n_markers = (len(lines[0].split(",")) - offset) // 2 // n_cameras
    names = [f"marker{i + 1:03d}" for i in range(n_markers)]
    points = {}
    frame = 0
    for li, line in enumerate(lines):
        fields = line.split(",")
        if header_row and li == 0:
            names = [fields[i * 2 * n_cameras + offset].replace("_cam1_X", "").strip() for i in range(n_markers)]
            continue
        for i in range(n_markers):
            for j in range(n_cameras):
                fx, fy = fields[offset + i * 2 * n_cameras + 2 * j], fields[offset + i * 2 * n_cameras + 2 * j + 1]
                if "NaN" in fx or "NaN" in fy:
                    continue
                x, y = float(fx), float(fy)
                if offset1:
                    x, y = x - 1, y - 1
                if yinvert:
                    y = heights[j] - y - 1
                points[(i, j, frame)] = (x, y)
        frame += 1
    return points, names


def _points(seed=0, n_frames=6, n_markers=4):
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_frames):
        for m in (3, 7, 11, 20)[:n_markers]:
            for c in range(2):
                if rng.uniform() < 0.2:
                    continue  # missing in this frame and camera
                rows.append((f, m, c, rng.uniform(0, 1000), rng.uniform(0, 1000)))
    return pd.DataFrame(rows, columns=["frame", "marker", "camera", "u", "v"])


def xmalab_save2d_points(points, n_markers, n_frames, heights, offset1, yinvert, header_row=True, offset_cols=False):
    """``Trial::save2dPoints``, one file (Trial.cpp 1700-1805): with ``headerRow`` the offset
    columns' labels ``cam<j>_offset`` with no comma after them, then ``marker%03d_cam<j+1>_X,_Y``;
    per frame ``0,`` per camera for the offset columns, each point ``yinvert`` (y = H - y - 1)
    then ``offset1`` (+1, +1), 12 significant digits, ``NaN,NaN`` where missing.
    ``points``: ``{(marker, camera, frame): (x, y)}`` in XMALab's internal pixels."""
    n_cam = len(heights)
    out = ""
    if header_row:
        out += "".join(f"cam{j}_offset" for j in range(n_cam)) if offset_cols else ""
        out += ",".join(f"marker{i + 1:03d}_cam{j + 1}_X,marker{i + 1:03d}_cam{j + 1}_Y"
                        for i in range(n_markers) for j in range(n_cam)) + "\n"
    for f in range(n_frames):
        fields = ["0"] * n_cam if offset_cols else []
        for i in range(n_markers):
            for j in range(n_cam):
                if (i, j, f) not in points:
                    fields += ["NaN", "NaN"]
                    continue
                x, y = points[(i, j, f)]
                if yinvert:
                    y = heights[j] - y - 1
                if offset1:
                    x, y = x + 1, y + 1
                fields += [f"{x:.12g}", f"{y:.12g}"]
        out += ",".join(fields) + "\n"
    return out


# XMALab's two switches, "count from 1" and "y up", for each convention.
SWITCHES = {"matlab": (True, True), "opencv": (False, False), "count1": (True, False), "yup": (False, True)}


@pytest.mark.parametrize("convention", list(SWITCHES))
@pytest.mark.parametrize("header_row", [True, False])
@pytest.mark.parametrize("offset_cols", [False, True])
def test_points2d_exported_by_xmalab_read_here(tmp_path, convention, header_row, offset_cols):
    rng = np.random.default_rng(3)
    truth = {(i, j, f): tuple(rng.uniform(0, 1000, 2)) for i in range(3) for j in range(2) for f in range(5)
             if rng.uniform() > 0.2}
    offset1, yinvert = SWITCHES[convention]
    text = xmalab_save2d_points(truth, 3, 5, HEIGHTS, offset1, yinvert, header_row, offset_cols)
    (tmp_path / "x.csv").write_text(text)
    back = load_points2d(tmp_path / "x.csv", HEIGHTS, convention, offset_columns=offset_cols)
    got = {(r.marker, r.camera, r.frame): (r.u, r.v) for r in back.itertuples()}
    assert got.keys() == truth.keys() and set(back["name"]) == {"marker001", "marker002", "marker003"}
    for k, xy in truth.items():
        np.testing.assert_allclose(got[k], xy, rtol=1e-11, atol=1e-8)


@pytest.mark.parametrize("convention", list(SWITCHES))
def test_points2d_written_are_what_xmalab_imports(tmp_path, convention):
    pts = _points()
    save_points2d(pts, tmp_path / "p.csv", HEIGHTS, n_frames=7, convention=convention,
                  names={20: "radius_distal"})
    text = (tmp_path / "p.csv").read_text()
    offset1, yinvert = SWITCHES[convention]
    got, names = xmalab_load2d_points(text, 2, HEIGHTS, offset1=offset1, yinvert=yinvert)
    assert names == ["marker001", "marker002", "marker003", "radius_distal"]
    assert len(text.strip().split("\n")) == 1 + 7  # header, then one row per frame (the last all NaN)
    index = {m: i for i, m in enumerate(sorted(pts.marker.unique()))}
    expected = {(index[r.marker], r.camera, r.frame): (r.u, r.v) for r in pts.itertuples()}
    assert got.keys() == expected.keys()
    for k, (x, y) in expected.items():
        np.testing.assert_allclose(got[k], (x, y), rtol=1e-11, atol=1e-8)  # 12 significant digits
    back = load_points2d(tmp_path / "p.csv", HEIGHTS, convention)
    assert len(back) == len(pts)
    merged = back.merge(pts.assign(marker=pts.marker.map(index)), on=["frame", "marker", "camera"])
    np.testing.assert_allclose(merged[["u_x", "v_x"]].to_numpy(), merged[["u_y", "v_y"]].to_numpy(), atol=1e-8)


def test_points2d_bad_input(tmp_path):
    pts = _points()
    with pytest.raises(ValueError, match="camera"):
        save_points2d(pts.assign(camera=2), tmp_path / "p.csv", HEIGHTS, n_frames=7)
    with pytest.raises(ValueError, match="more than one"):
        save_points2d(pd.concat([pts, pts.iloc[:1]]), tmp_path / "p.csv", HEIGHTS, n_frames=7)
    (tmp_path / "bad.csv").write_text("a_cam1_X,a_cam1_Y,a_cam2_X,b_cam2_Y\n1,2,3,4\n")
    with pytest.raises(ValueError, match="header"):
        load_points2d(tmp_path / "bad.csv", HEIGHTS)
    (tmp_path / "bad.csv").write_text("a_cam1_X,a_cam1_Y,a_cam2_X,a_cam2_Y\n1,2,x,4\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        load_points2d(tmp_path / "bad.csv", HEIGHTS)


def test_points3d_round_trip_with_and_without_frame_column(tmp_path):
    rng = np.random.default_rng(1)
    pts = pd.DataFrame([(f, m, *rng.normal(size=3) * 50) for f in range(4) for m in (5, 9) if (f, m) != (2, 9)],
                       columns=["frame", "marker", "x", "y", "z"])
    for frame_column in (False, True):
        save_points3d(pts, tmp_path / "p.csv", n_frames=5, frame_column=frame_column)
        lines = (tmp_path / "p.csv").read_text().strip().split("\n")
        assert lines[0] == ("Frame," if frame_column else "") + "marker001_X,marker001_Y,marker001_Z,marker002_X,marker002_Y,marker002_Z"
        assert lines[3].endswith("NaN,NaN,NaN") and lines[5].count("NaN") == 6
        back = load_points3d(tmp_path / "p.csv")
        assert len(back) == len(pts)
        np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(),
                                   pts.sort_values(["marker", "frame"])[["x", "y", "z"]].to_numpy(), rtol=1e-11)


def test_frame_column_numbered_from_zero_is_refused(tmp_path):
    """XMALab numbers the Frame column from 1. A file numbered from 0 read its frame 0 as index
    -1: the rigid-body reader put that pose on the last frame, overwriting it (two rows, one
    frame back), and the 3D reader returned a frame -1."""
    labels = ",".join(f"RB_{a}" for a in ("R11", "R12", "R13", "01", "R21", "R22", "R23", "02", "R31", "R32",
                                          "R33", "03", "TX", "TY", "TZ", "1"))
    eye = "1,0,0,0,0,1,0,0,0,0,1,0"
    (tmp_path / "rb.csv").write_text(f"Frame,{labels}\n0,{eye},5,6,7,1\n1,{eye},8,9,10,1\n")
    with pytest.raises(ValueError, match=r"rb.csv:2: Frame: expected frame numbers from 1"):
        load_rigid_body_transforms(tmp_path / "rb.csv")
    (tmp_path / "p.csv").write_text("1,1,2,3\n2.5,4,5,6\n")  # no header: 3 m + 1 columns hold a frame column
    with pytest.raises(ValueError, match=r"p.csv:2: Frame: expected frame numbers from 1"):
        load_points3d(tmp_path / "p.csv")
    (tmp_path / "p.csv").write_text("Frame,m_X,m_Y,m_Z\n2,1,2,3\n4,4,5,6\n")  # from 1, with gaps: read
    assert load_points3d(tmp_path / "p.csv")["frame"].tolist() == [1, 3]


def test_points3d_without_header_and_filtered_names(tmp_path):
    """XMALab's 3D export without its header row (Trial.cpp 1553: ``headerRow``), with and
    without the frame column, and a filtered export's ``<name>_<cutoff>Hz_X`` header (1573-1578)."""
    rows = [[1.5, "NaN", 3.25, 4.0, 5.0, 6.0], [7.0, 8.0, 9.0, "NaN", "NaN", "NaN"]]
    for frame_column in (False, True):
        lines = [",".join(([str(f + 1)] if frame_column else []) + [str(v) for v in r]) for f, r in enumerate(rows)]
        (tmp_path / "p.csv").write_text("\n".join(lines) + "\n")
        back = load_points3d(tmp_path / "p.csv")
        assert list(back["name"]) == ["marker001", "marker002"] and list(back["frame"]) == [1, 0]
        np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), [[7, 8, 9], [4, 5, 6]])
    (tmp_path / "f.csv").write_text("radius_20Hz_X,radius_20Hz_Y,radius_20Hz_Z\n1,2,3\n")
    assert list(load_points3d(tmp_path / "f.csv")["name"]) == ["radius"]


def xmalab_transformation_row(Rq, tq):
    """``RigidBody::getTransformationMatrix`` (RigidBody.cpp 2264-2306): ``trans[4y + k] = Rq(y, k)``,
    ``trans[12..14] = -Rq^T tq``, with ``X_ref = Rq X_world + tq`` from its Kabsch fit."""
    trans = [0.0] * 16
    for y in range(3):
        for k in range(3):
            trans[4 * y + k] = Rq[y, k]
    trans[12:15] = list(-Rq.T @ tq)
    trans[15] = 1.0
    return trans


def test_rigid_body_transforms_match_xmalab(tmp_path):
    rng = np.random.default_rng(2)
    poses = np.full((3, 2, 4, 4), np.nan)
    rows = []
    for f in range(3):
        row = []
        for b in range(2):
            Rq, tq = rotvec_to_matrix(rng.normal(size=3)), rng.normal(scale=80, size=3)
            if (f, b) == (1, 0):
                row += ["NaN"] * 16
                continue
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = Rq.T, -Rq.T @ tq  # body (reference) -> world
            poses[f, b] = T
            row += [f"{v:.12g}" for v in xmalab_transformation_row(Rq, tq)]
        rows.append(",".join(row))
    labels = ["R11", "R12", "R13", "01", "R21", "R22", "R23", "02", "R31", "R32", "R33", "03", "TX", "TY", "TZ", "1"]
    header = ",".join(f"{n}_{label}_20Hz" for n in ("RigidBody001", "RigidBody002") for label in labels)
    (tmp_path / "xma.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    names, back = load_rigid_body_transforms(tmp_path / "xma.csv")
    assert names == ["RigidBody001", "RigidBody002"]
    np.testing.assert_allclose(back, poses, rtol=1e-10, atol=1e-9)
    save_rigid_body_transforms(poses, tmp_path / "ours.csv")
    ours = (tmp_path / "ours.csv").read_text().strip().split("\n")
    assert ours[0] == header.replace("_20Hz", "") and ours[1:] == rows
    # XMALab's export without its header row, with and without the frame column (1-based).
    (tmp_path / "bare.csv").write_text("\n".join(rows) + "\n")
    names, bare = load_rigid_body_transforms(tmp_path / "bare.csv")
    assert names == ["RigidBody001", "RigidBody002"]
    np.testing.assert_allclose(bare, poses, rtol=1e-10, atol=1e-9)
    (tmp_path / "framed.csv").write_text("\n".join(f"{f + 2},{r}" for f, r in enumerate(rows)) + "\n")
    _, framed = load_rigid_body_transforms(tmp_path / "framed.csv")
    assert framed.shape == (4, 2, 4, 4) and np.isnan(framed[0]).all()
    np.testing.assert_allclose(framed[1:], poses, rtol=1e-10, atol=1e-9)


def test_tables_of_no_markers_read_back_empty(tmp_path):
    """A trial without beads: XMALab's tables of no markers or bodies are an empty header and an
    empty line per frame; they read back as empty tables (three frames of no bodies)."""
    none = np.zeros(0, int)
    empty2 = pd.DataFrame({"frame": none, "marker": none, "camera": none, "u": [], "v": []})
    save_points2d(empty2, tmp_path / "p2.csv", HEIGHTS, n_frames=3)
    empty3 = pd.DataFrame({"frame": none, "marker": none, "x": [], "y": [], "z": []})
    save_points3d(empty3, tmp_path / "p3.csv", n_frames=3)
    save_rigid_body_transforms(np.zeros((3, 0, 4, 4)), tmp_path / "rb.csv")
    for name in ("p2.csv", "p3.csv", "rb.csv"):
        assert (tmp_path / name).read_text() == "\n" * 4
    assert load_points2d(tmp_path / "p2.csv", HEIGHTS).empty
    assert load_points3d(tmp_path / "p3.csv").empty
    names, poses = load_rigid_body_transforms(tmp_path / "rb.csv")
    assert names == [] and poses.shape == (3, 0, 4, 4)
    (tmp_path / "nothing.csv").write_text("")
    with pytest.raises(ValueError, match="empty 3D point file"):
        load_points3d(tmp_path / "nothing.csv")

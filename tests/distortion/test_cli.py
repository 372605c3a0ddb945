"""``stereodrr distortion`` and ``stereodrr undistort``."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import tifffile

from stereodrr.cli import main
from stereodrr.distortion import load_distortion


@pytest.fixture(scope="module")
def grid_tif(tmp_path_factory, small_grid):
    path = tmp_path_factory.mktemp("grid") / "grid.tif"
    tifffile.imwrite(path, np.round(small_grid * 40000).astype(np.uint16))
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory, grid_tif):
    out = tmp_path_factory.mktemp("out")
    assert main(["distortion", "--grid", str(grid_tif), "-o", str(out)]) == 0
    return out


def test_distortion_writes_the_map_and_figure_and_prints_the_residuals(tmp_path, grid_tif, capsys):
    out = tmp_path / "m"
    assert main(["distortion", "--grid", str(grid_tif), "-o", str(out), "--model", "lwm"]) == 0
    text = capsys.readouterr().out
    assert "hex lattice" in text and "polynomial (degree" in text and "lwm (12 neighbours)" in text
    assert "held-out RMS" in text and "choice: lwm (--model)" in text
    d = json.loads((out / "distortion.json").read_text())
    assert d["schema"] == "stereodrr.distortion/1" and d["model"] == "lwm" and d["choice"] == "requested"
    assert (out / "distortion.png").stat().st_size > 10000


def test_undistort_images_keep_format_and_dtype(tmp_path, grid_tif, measured, capsys):
    png = tmp_path / "frame.png"
    frame = (np.arange(320 * 320).reshape(320, 320) % 251).astype(np.uint8)
    cv2.imwrite(str(png), frame)
    out = tmp_path / "corrected"
    assert main(["undistort", "--distortion", str(measured), "--images", str(grid_tif), str(png), "-o", str(out)]) == 0
    assert "wrote 2 corrected image(s)" in capsys.readouterr().out
    a = tifffile.imread(out / "grid.tif")
    b = cv2.imread(str(out / "frame.png"), cv2.IMREAD_UNCHANGED)
    assert a.dtype == np.uint16 and a.shape == (320, 320) and b.dtype == np.uint8
    m = load_distortion(measured / "distortion.json")
    expect = np.clip(np.round(m.undistort_image(tifffile.imread(grid_tif))), 0, 65535)
    assert np.array_equal(a, expect.astype(np.uint16))


def test_undistort_points_table(tmp_path, measured):
    src = tmp_path / "p.csv"
    pd.DataFrame({"marker": ["a", "b", "c"], "u": [100.0, 160.25, np.nan], "v": [50.0, 170.5, 3.0]}).to_csv(src, index=False)
    dst = tmp_path / "q.csv"
    assert main(["undistort", "--distortion", str(measured / "distortion.json"), "--points", str(src),
                 "-o", str(dst)]) == 0
    t = pd.read_csv(dst)
    assert list(t.columns) == ["marker", "u_distorted", "v_distorted", "u_corrected", "v_corrected"]
    m = load_distortion(measured / "distortion.json")
    np.testing.assert_allclose(t[["u_corrected", "v_corrected"]].to_numpy()[:2],
                               m.undistort_points(np.array([[100.0, 50.0], [160.25, 170.5]])), atol=1e-6)
    assert t[["u_corrected", "v_corrected"]].iloc[2].isna().all()


def test_errors_are_one_line_and_write_nothing(tmp_path, grid_tif, measured, capsys):
    def err(argv, code=1):
        assert main(argv) == code
        e = capsys.readouterr().err.strip()
        assert e.count("\n") == 0, e
        return e

    assert "--grid" in err(["distortion", "--grid", str(tmp_path / "none.tif"), "-o", str(tmp_path / "o")])
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    assert "notes.tif" in err(["distortion", "--grid", str(text), "-o", str(tmp_path / "o")])
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 255, (200, 200)).astype(np.uint8))
    assert "noise.png" in err(["distortion", "--grid", str(noise), "-o", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 120), np.uint8))
    e = err(["undistort", "--distortion", str(measured), "--images", str(small), "-o", str(tmp_path / "c")])
    assert "120 x 100 pixels" in e and "320 x 320" in e
    assert not (tmp_path / "c").exists()
    # A DICOM after a good PNG: refused before the PNG is written (undistort writes what it read).
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((320, 320), np.uint8))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((320, 320), np.uint16)), str(tmp_path / "frame.dcm"))
    e = err(["undistort", "--distortion", str(measured), "--images", str(good), str(tmp_path / "frame.dcm"), "-o",
             str(tmp_path / "c")], code=2)
    assert "frame.dcm: undistort writes each image in its own format" in e
    assert not (tmp_path / "c").exists()
    csv = tmp_path / "xy.csv"
    csv.write_text("x,y\n1,2\n")
    assert "expected columns u, v" in err(["undistort", "--distortion", str(measured), "--points", str(csv),
                                           "-o", str(tmp_path / "q.csv")])
    rig = tmp_path / "rig.json"
    rig.write_text('{"schema": "stereodrr.rig/1"}')
    assert "expected a distortion map" in err(["undistort", "--distortion", str(rig), "--points", str(csv),
                                               "-o", str(tmp_path / "q.csv")])
    with pytest.raises(SystemExit) as exc:  # neither --images nor --points: a usage error
        main(["undistort", "--distortion", str(measured), "-o", str(tmp_path / "q.csv")])
    assert exc.value.code == 2 and "one of the arguments --images --points is required" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["empty", "truncated", "nan", "constant", "folder", "colour", "stack"])
def test_bad_grid_files(tmp_path, grid_tif, capsys, case):
    bad = tmp_path / "bad.tif"
    if case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        bad.write_bytes(grid_tif.read_bytes()[:5000])
    elif case == "nan":
        tifffile.imwrite(bad, np.full((64, 64), np.nan, np.float32))
    elif case == "constant":
        tifffile.imwrite(bad, np.full((64, 64), 1000, np.uint16))
    elif case == "folder":
        bad.mkdir()
    elif case == "stack":  # the grid behind a blank page: which page is the grid is not guessed
        g = tifffile.imread(grid_tif)
        tifffile.imwrite(bad, np.stack([g, g]))
    else:
        bad = tmp_path / "bad.png"
        cv2.imwrite(str(bad), np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc = main(["distortion", "--grid", str(bad), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc in (1, 2) and err.count("\n") == 0 and "Traceback" not in err and "bad" in err, err
    if case == "stack":
        assert "holds 2 images, expected one image" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_bad_maps_and_tables(tmp_path, measured, capsys):
    d = json.loads((measured / "distortion.json").read_text())
    cases = {"truncated.json": (measured / "distortion.json").read_text()[:300],
             "strings.json": json.dumps({**d, "map": {**d["map"], "coefficients_u": ["x"] * 3}}),
             "size.json": json.dumps({**d, "image": {"width": -3, "height": 10}}),
             "model.json": json.dumps({**d, "model": "spline"}),
             "residuals.json": json.dumps({**d, "residuals": None})}  # was an internal TypeError
    table = tmp_path / "p.csv"
    table.write_text("u,v\n1,2\n")
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        rc = main(["undistort", "--distortion", str(tmp_path / name), "--points", str(table), "-o", str(tmp_path / "o.csv")])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and err.count("\n") == 0 and name in err, (name, err)
    words = tmp_path / "words.csv"
    words.write_text("u,v\na,b\n")
    rc = main(["undistort", "--distortion", str(measured), "--points", str(words), "-o", str(tmp_path / "o.csv")])
    assert rc == 1 and "must hold numbers" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
    # A point given but not correctable was written with empty corrected cells, exit 0: refused
    # (an empty or NaN cell is a point not recorded, and stays empty).
    for row in ("inf,4", "1e300,1e300"):
        far = tmp_path / "far.csv"
        far.write_text(f"u,v\n1,2\n,\nnan,nan\n{row}\n")
        rc = main(["undistort", "--distortion", str(measured), "--points", str(far), "-o", str(tmp_path / "o.csv")])
        err = capsys.readouterr().err
        assert rc == 1 and f"far.csv: row 4: u {float(row.split(',')[0]):g}, v " in err and "cannot be corrected" in err
        assert not (tmp_path / "o.csv").exists()


def test_undistort_corrects_every_page_of_a_stack(tmp_path, grid_tif, measured, capsys):
    """A TIFF stack is corrected page by page into a stack (only its first page was kept); a
    page of another size is refused before anything is written."""
    m = load_distortion(measured / "distortion.json")
    pages = np.stack([tifffile.imread(grid_tif), tifffile.imread(grid_tif)[::-1].copy()])
    tifffile.imwrite(tmp_path / "stack.tif", pages)
    out = tmp_path / "c"
    assert main(["undistort", "--distortion", str(measured), "--images", str(tmp_path / "stack.tif"), "-o",
                 str(out)]) == 0
    assert "1 corrected image(s), 2 frame(s)" in capsys.readouterr().out
    got = tifffile.imread(out / "stack.tif")
    assert got.shape == pages.shape and got.dtype == np.uint16
    for k in range(2):
        assert np.array_equal(got[k], np.clip(np.round(m.undistort_image(pages[k])), 0, 65535).astype(np.uint16))
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as w:
        w.write(pages[0])
        w.write(pages[0][:200])
    rc = main(["undistort", "--distortion", str(measured), "--images", str(grid_tif), str(tmp_path / "mixed.tif"),
               "-o", str(tmp_path / "d")])
    assert rc == 1 and "mixed.tif page 1: 320 x 200 pixels" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_undistort_points_keeps_the_other_columns_as_written(tmp_path, measured, capsys):
    """The other columns come out as they came in (IDs with leading zeros, small numbers: they
    were parsed and rewritten at 6 decimals), and a table that already has an output column, or
    -o naming the input, is refused."""
    src = tmp_path / "p.csv"
    src.write_text("id,u,v,weight\n007,100.5,200.25,1e-9\n010,,,0.0000012345\n")
    dst = tmp_path / "q.csv"
    assert main(["undistort", "--distortion", str(measured), "--points", str(src), "-o", str(dst)]) == 0
    lines = dst.read_text().splitlines()
    assert lines[0] == "id,weight,u_distorted,v_distorted,u_corrected,v_corrected"
    assert lines[1].startswith("007,1e-9,100.500000,200.250000,") and lines[2] == "010,0.0000012345,,,,"
    m = load_distortion(measured / "distortion.json")
    np.testing.assert_allclose([float(x) for x in lines[1].split(",")[4:]],
                               m.undistort_points(np.array([[100.5, 200.25]]))[0], atol=1e-6)
    capsys.readouterr()
    assert main(["undistort", "--distortion", str(measured), "--points", str(src), "-o", str(src)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    (tmp_path / "again.csv").write_text("u,v,u_corrected\n1,2,3\n")
    assert main(["undistort", "--distortion", str(measured), "--points", str(tmp_path / "again.csv"), "-o",
                 str(tmp_path / "r.csv")]) == 1
    assert "already has column(s) u_corrected" in capsys.readouterr().err


def test_undistort_points_outside_the_map_warn(tmp_path, measured):
    """A point outside the map's image (u and v swapped, or another camera's map) is corrected by
    extrapolation: written, with a warning naming the first such row."""
    src = tmp_path / "p.csv"
    src.write_text("u,v\n100,200\n-20,128\n5000,10\n")
    with pytest.warns(UserWarning, match=r"2 point\(s\) lie outside the map's 320 x 320 image \(first: row 2, u -20, v 128\)"):
        assert main(["undistort", "--distortion", str(measured), "--points", str(src), "-o", str(tmp_path / "q.csv")]) == 0
    assert len((tmp_path / "q.csv").read_text().splitlines()) == 4


def test_undistort_keeps_an_inverted_exports_outside_level(tmp_path, grid_tif, measured):
    """Corrected pixels without recorded data take the frame's own level outside the round field:
    white for an inverted export (they were set to 0, a black ring around a white outside),
    black for the raw frame; inside the field the two stay each other's inverse."""
    m = load_distortion(measured / "distortion.json")
    g = tifffile.imread(grid_tif).astype(np.float64)
    raw = np.round(255 * g / g.max()).astype(np.uint8)
    assert np.isfinite(m.field_radius) and (~m.field_of_view(-2.0).mask(raw.shape)).mean() > 0.01  # a round field
    cv2.imwrite(str(tmp_path / "raw.png"), raw)
    cv2.imwrite(str(tmp_path / "inverted.png"), 255 - raw)
    assert main(["undistort", "--distortion", str(measured), "--images", str(tmp_path / "raw.png"),
                 str(tmp_path / "inverted.png"), "-o", str(tmp_path / "c")]) == 0
    a, b = (cv2.imread(str(tmp_path / "c" / f), cv2.IMREAD_UNCHANGED).astype(int) for f in ("raw.png", "inverted.png"))
    outside = ~m.field_of_view(-2.0).mask(raw.shape)
    assert np.median(255 - raw[outside]) == 255 and (b[outside] == 255).all()
    assert (a[outside] == 0).all()
    assert np.abs(a + b - 255).max() <= 1  # rounding

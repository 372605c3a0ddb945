"""Image files as users bring them, written by other libraries than stereodrr's: each command
reads them as their format says, or refuses them with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from stereodrr.cli import main
from stereodrr.geometry import StereoRig, save_rig


def test_calibrate_refuses_a_multi_page_tiff(tmp_path: Path, capsys) -> None:
    """A two-page TIFF (a stack saved by mistake): OpenCV would return its first page alone."""
    save_rig(StereoRig.convergent(5.0, 750, 1200, 4.0, 32, 24), tmp_path / "rig.json")
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(0, 65535, (2, 24, 32), dtype=np.uint16))
    rc = main(["calibrate", "--images", str(tmp_path / "stack.tif"), str(tmp_path / "stack.tif"), "--phantom",
               "lego_stereo", "--rig", str(tmp_path / "rig.json"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "stack.tif: holds 2 images, expected one image" in err, err


def test_register_refuses_a_bone_bright_8bit_display(tmp_path: Path) -> None:
    """An 8-bit PNG with bone bright (a viewer's inverted export, written by OpenCV) read as raw
    counts would register the CT inverted; the raw frame (bone dark) beside it is converted."""
    import cv2
    import pytest

    from stereodrr.registration.inputs import to_line_integral
    from stereodrr.trial import read_image

    v, u = np.mgrid[0:64, 0:64]
    drr = 0.5 + 2.0 * np.exp(-((u - 30) ** 2 + (v - 36) ** 2) / 200.0)  # a bone over soft tissue
    raw = np.round(250 * np.exp(-drr)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "raw.png"), raw)
    cv2.imwrite(str(tmp_path / "inverted.png"), 255 - raw)
    line, kind = to_line_integral(read_image(str(tmp_path / "raw.png")), "auto", "raw.png", drr)
    assert kind == "intensity" and np.corrcoef(line.ravel(), drr.ravel())[0, 1] > 0.99
    with pytest.raises(ValueError, match="inverted.png: bone shows bright"):
        to_line_integral(read_image(str(tmp_path / "inverted.png")), "auto", "inverted.png", drr)


def test_register_takes_a_raw_frame_from_a_start_that_misses_the_anatomy() -> None:
    """From a start whose DRR does not overlap the anatomy both correlations are near zero: the
    raw frame is converted, not refused as bone-bright by chance."""
    from stereodrr.registration.inputs import to_line_integral

    v, u = np.mgrid[0:64, 0:64]
    frame = 0.5 + 2.0 * np.exp(-((u - 30) ** 2 + (v - 36) ** 2) / 200.0)
    raw = np.round(250 * np.exp(-frame)).astype(np.uint8)
    rng = np.random.default_rng(3)
    for _ in range(20):  # DRRs of a start far off: structure that has nothing to do with the frame
        drr = rng.normal(size=(64, 64)) + 2.0 * np.exp(-((u - 5) ** 2 + (v - 60) ** 2) / 20.0)
        line, kind = to_line_integral(raw, "auto", "raw.png", drr)
        assert kind == "intensity" and np.corrcoef(line.ravel(), frame.ravel())[0, 1] > 0.99


def test_register_masks_an_intensifier_field_when_no_masks_are_given(tmp_path: Path) -> None:
    """Raw 16-bit frames with a black round field (drawn by numpy, written by tifffile): without
    --masks the field found on each frame is its mask; frames without one (a flat panel) get none."""
    import argparse

    from stereodrr.cli.register import _read_images

    rig = StereoRig.convergent(5.0, 750, 1200, 0.6, 160, 128)
    v, u = np.mgrid[0:128, 0:160]
    body = 40000 * np.exp(-0.8 * np.exp(-((u - 80) ** 2 + (v - 60) ** 2) / 900.0))
    inside = (u - 78.5) ** 2 + (v - 63.0) ** 2 <= 58.0**2
    for view in rig.names:
        tifffile.imwrite(tmp_path / f"{view}.tif", np.where(inside, body, 30).astype(np.uint16))
        tifffile.imwrite(tmp_path / f"{view}_flat.tif", body.astype(np.uint16))
    args = argparse.Namespace(images=[str(tmp_path / f"{n}.tif") for n in rig.names], masks=None, distortion=None,
                              distortion_route=None, kind="auto")
    _, masks, _ = _read_images(args, rig)
    assert masks is not None
    for view in rig.names:
        m = masks[view] > 0
        assert not m[~inside].any()  # nothing outside the field
        assert m[(u - 78.5) ** 2 + (v - 63.0) ** 2 <= 52.0**2].all()  # the field, less its margin
    args.images = [str(tmp_path / f"{n}_flat.tif") for n in rig.names]
    assert _read_images(args, rig)[1] is None  # a round dark body on bright air is not a field
    args.images, args.kind = [str(tmp_path / f"{n}.tif") for n in rig.names], "line_integral"
    assert _read_images(args, rig)[1] is None  # a line integral is not searched


def test_one_reader_for_every_format_users_bring(tmp_path: Path, capfd) -> None:
    """C-arms export DICOM, research tools MHA/NRRD, viewers save grey as RGB PNG: each reads
    as the array its writer (SimpleITK, OpenCV, tifffile) was given; a colour image, a stack
    or a 3D volume given as one image is refused with the file named."""
    import cv2
    import pytest
    import SimpleITK as sitk

    from stereodrr.trial import read_frame, read_image

    rng = np.random.default_rng(1)
    a16 = rng.integers(0, 4096, (24, 32), dtype=np.uint16)
    f32 = rng.random((24, 32), dtype=np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(a16), str(tmp_path / "xray.dcm"))
    sitk.WriteImage(sitk.GetImageFromArray(f32), str(tmp_path / "xray.mha"))
    sitk.WriteImage(sitk.GetImageFromArray(a16[None]), str(tmp_path / "slice.nrrd"))  # 3D of one slice
    cv2.imwrite(str(tmp_path / "grey_rgb.png"), np.repeat((a16 >> 4).astype(np.uint8)[..., None], 3, axis=2))
    cv2.imwrite(str(tmp_path / "xray.bmp"), (a16 >> 4).astype(np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "xray.dcm"), a16)
    np.testing.assert_array_equal(read_image(tmp_path / "xray.mha"), f32)
    np.testing.assert_array_equal(read_image(tmp_path / "slice.nrrd"), a16)
    np.testing.assert_array_equal(read_image(tmp_path / "grey_rgb.png"), a16 >> 4)
    np.testing.assert_array_equal(read_image(tmp_path / "xray.bmp"), a16 >> 4)

    colour = np.dstack([a16 >> 4, a16 >> 5, a16 >> 6]).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "colour.png"), colour)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([a16, a16 // 2])), str(tmp_path / "cine.mha"))
    with pytest.raises(ValueError, match="colour.png: expected a grey image, got 3 differing colour channels"):
        read_image(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="cine.mha: holds 2 images, expected one image"):
        read_image(tmp_path / "cine.mha")
    np.testing.assert_array_equal(read_frame(tmp_path / "cine.mha"), a16)  # a sequence's first frame
    (tmp_path / "junk.dcm").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.dcm: cannot read as an image"):
        read_image(tmp_path / "junk.dcm")
    # A truncated MHA: ITK's own complaint is in the one line, not printed beside it.
    sitk.WriteImage(sitk.GetImageFromArray(a16), str(tmp_path / "whole.mha"))
    data = (tmp_path / "whole.mha").read_bytes()
    (tmp_path / "cut.mha").write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"cut.mha: cannot read as an image \(ideal = 1536 : actual = \d+ "):
        read_image(tmp_path / "cut.mha")
    assert capfd.readouterr().err == ""


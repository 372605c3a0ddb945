import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from stereodrr.geometry import rotvec_to_matrix
from stereodrr.phantoms import torso_phantom
from stereodrr.volume import Volume, hu_to_mu, load_volume, mu_to_hu, mu_water, save_volume


def _oblique_image(rng) -> sitk.Image:
    arr = rng.normal(size=(7, 9, 11)).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin((-12.5, 33.0, 101.25))
    img.SetSpacing((0.7, 1.3, 2.1))
    D = rotvec_to_matrix(np.array([0.3, -0.5, 0.9])) @ np.diag([1, -1, 1])  # oblique and flipped
    img.SetDirection(tuple(D.ravel()))
    return img


def test_index_world_maps_equal_simpleitk(rng):
    img = _oblique_image(rng)
    vol = Volume.from_sitk(img)
    ijk = rng.uniform(-0.5, 10.5, size=(100, 3))
    ref = np.array([img.TransformContinuousIndexToPhysicalPoint(tuple(p)) for p in ijk])
    assert np.allclose(vol.index_to_world(ijk), ref, atol=1e-10)
    assert np.allclose(vol.world_to_index(ref), ijk, atol=1e-10)
    assert np.array_equal(vol.index_to_world(ijk[::-1]), vol.index_to_world(ijk)[::-1])  # a view of negative stride
    # integer indices: the voxel centres
    assert np.allclose(vol.index_to_world(np.array([[2.0, 3.0, 4.0]]))[0], img.TransformIndexToPhysicalPoint((2, 3, 4)))
    # torch input keeps torch
    out = vol.index_to_world(torch.tensor(ijk))
    assert isinstance(out, torch.Tensor) and np.allclose(out.numpy(), ref, atol=1e-10)
    # the renderer's world -> index matrix agrees with SimpleITK's physical -> index map
    ref_ijk = np.array([img.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in ref])
    A = vol.index_from_world
    assert np.allclose(ref @ A[:3, :3].T + A[:3, 3], ref_ijk, atol=1e-10)
    At = vol.index_from_world_tensor()
    assert At.dtype == vol.data.dtype and At.shape == (4, 4) and np.allclose(At.numpy(), A, atol=1e-6)


def test_box_and_centre(rng):
    vol = Volume.from_sitk(_oblique_image(rng))
    c = vol.corners()
    assert c.shape == (8, 3)
    assert np.allclose(c.mean(0), vol.center)
    # corners are ordered (i, j, k) in {0,1}^3: c[4], c[2], c[1] neighbour c[0] along i, j, k
    edges = np.linalg.norm(c[[4, 2, 1]] - c[0], axis=1)
    assert np.allclose(edges, np.array(vol.size) * vol.spacing)


@pytest.mark.parametrize("ext", [".nii.gz", ".mha", ".nrrd"])
def test_save_load_round_trip(tmp_path, rng, ext):
    vol = Volume.from_sitk(_oblique_image(rng))
    path = save_volume(vol, tmp_path / f"v{ext}")
    back = load_volume(path)
    assert torch.equal(back.data, vol.data)
    assert np.allclose(back.origin, vol.origin) and np.allclose(back.spacing, vol.spacing)
    assert np.allclose(back.direction, vol.direction, atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def _write_dicom_series(folder, arr, uid, prefix="slice"):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.5, 2.0))
    img.SetOrigin((10.0, -20.0, 30.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr.shape[0]):
        sl = img[:, :, k]
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|000e", uid)
        sl.SetMetaData("0020|0013", str(k))
        sl.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series(tmp_path):
    arr = (np.arange(4 * 5 * 6).reshape(4, 5, 6) - 50).astype(np.int16)
    _write_dicom_series(tmp_path, arr, "1.2.826.0.1.3680043.2.1125.1")
    vol = load_volume(tmp_path)
    assert vol.size == (6, 5, 4)
    assert np.allclose(vol.data.numpy(), arr)
    assert np.allclose(vol.origin, [10, -20, 30]) and np.allclose(vol.spacing, [0.5, 0.5, 2.0])
    # A second, shorter series beside it (a scout, another reconstruction): the longest is read.
    _write_dicom_series(tmp_path, arr[:2] + 7, "1.2.826.0.1.3680043.2.1125.2", prefix="scout")
    with pytest.warns(UserWarning, match=r"2 DICOM series; reading 1\.2\.826\.0\.1\.3680043\.2\.1125\.1 \(4 files\)"):
        vol = load_volume(tmp_path)
    assert np.allclose(vol.data.numpy(), arr)


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    """One slice of six deleted: ITK read the series with one averaged z spacing (stretched, with
    a multi-line warning of its own); the uneven slice positions are an error naming the folder."""
    arr = (np.arange(6 * 5 * 6).reshape(6, 5, 6) - 50).astype(np.int16)
    _write_dicom_series(tmp_path, arr, "1.2.826.0.1.3680043.2.1125.3")
    assert np.allclose(load_volume(tmp_path).spacing, [0.5, 0.5, 2.0])
    (tmp_path / "slice003.dcm").unlink()
    with pytest.raises(ValueError, match=r"DICOM slices are not evenly spaced \(2 to 4 mm apart, mostly 2"):
        load_volume(tmp_path)


def test_one_dicom_slice_is_as_thick_as_its_slice_thickness_says(tmp_path):
    """GDCM gives a one-slice series 1 mm along z whatever the slice is: its Slice Thickness
    (0018,0050) is the one size the file knows; without it the slice is refused."""
    arr = (np.arange(5 * 6).reshape(1, 5, 6) - 5).astype(np.int16)
    for thickness, folder in (("2.5", tmp_path / "thick"), (None, tmp_path / "bare")):
        folder.mkdir()
        img = sitk.GetImageFromArray(arr[0])
        img.SetSpacing((0.5, 0.5))
        if thickness:
            img.SetMetaData("0018|0050", thickness)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / "only.dcm"))
        writer.Execute(img)
    for path in (tmp_path / "thick", tmp_path / "thick" / "only.dcm"):
        vol = load_volume(path)
        assert vol.size == (6, 5, 1) and np.allclose(vol.spacing, [0.5, 0.5, 2.5]), path
        assert np.allclose(vol.data.numpy(), arr)
    for path in (tmp_path / "bare", tmp_path / "bare" / "only.dcm"):
        with pytest.raises(ValueError, match=r"one DICOM slice without a slice thickness \(0018,0050\)"):
            load_volume(path)
    # A series of several slices keeps the spacing of their positions.
    _write_dicom_series(tmp_path, np.repeat(arr, 3, axis=0), "1.2.826.0.1.3680043.2.1125.9")
    assert np.allclose(load_volume(tmp_path).spacing, [0.5, 0.5, 2.0])


def test_nifti_nan_voxels_and_a_compressed_file_beside_its_uncompressed_twin(tmp_path):
    """SimpleITK reads a float NIfTI's NaN as 0 and, for ``x.nii.gz`` beside ``x.nii``, the
    uncompressed file's voxels under the compressed file's header; both are caught here."""
    a = np.ones((4, 5, 6), np.float32)
    a[1, 2, 3] = np.nan
    for ext in ("nii", "nii.gz"):
        sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / f"nan.{ext}"))
        with pytest.raises(ValueError, match=rf"nan\.{ext.replace('.', '[.]')}: 1 voxel\(s\) are NaN or inf"):
            load_volume(tmp_path / f"nan.{ext}")
    b = np.ones((4, 5, 6))
    b[0, 0, 0] = -np.inf
    sitk.WriteImage(sitk.GetImageFromArray(b), str(tmp_path / "inf.nii"))
    with pytest.raises(ValueError, match="NaN or inf"):
        load_volume(tmp_path / "inf.nii")
    save_volume(Volume.from_numpy(np.zeros((4, 5, 6))), tmp_path / "ct.nii")
    save_volume(Volume.from_numpy(np.full((4, 5, 6), 3.0), spacing=(2, 2, 2)), tmp_path / "ct.nii.gz")
    gz, raw = load_volume(tmp_path / "ct.nii.gz"), load_volume(tmp_path / "ct.nii")
    assert float(gz.data.mean()) == 3.0 and np.allclose(gz.spacing, 2.0)
    assert float(raw.data.mean()) == 0.0 and np.allclose(raw.spacing, 1.0)


def test_hu_mu():
    # NIST SRD 126 Table 4 (water), four printed digits.
    assert mu_water(60) == pytest.approx(0.02059, rel=5e-4)
    assert mu_water(80) == pytest.approx(0.01837, rel=5e-4)
    assert 0.01837 < mu_water(70) < 0.02059
    hu = np.array([-1000.0, 0.0, 1000.0, -1500.0])
    mu = hu_to_mu(hu, 60)
    assert np.allclose(mu, [0, 0.02059, 0.04118, 0], rtol=5e-4)
    assert np.allclose(mu_to_hu(mu[:3], 60), hu[:3])
    assert np.allclose(mu_to_hu(mu[:3].tolist(), 60), hu[:3])  # a list, as hu_to_mu takes (was a TypeError)
    with pytest.raises(ValueError, match="energy_kev"):
        mu_water(0.5)  # below the attenuation tables (1-800 keV)
    ct = Volume.from_numpy(hu.reshape(1, 2, 2), spacing=(0.5, 0.6, 0.7), origin=(1, 2, 3))
    vol = hu_to_mu(ct, 60)
    assert isinstance(vol, Volume) and np.array_equal(vol.spacing, ct.spacing) and np.array_equal(vol.origin, ct.origin)
    np.testing.assert_allclose(vol.data.numpy().ravel(), mu, rtol=1e-6)
    np.testing.assert_allclose(mu_to_hu(vol, 60).data.numpy().ravel()[:3], hu[:3], atol=1e-3)


def test_resample_and_downsample_keep_the_box():
    vol = torso_phantom(size=(40, 30, 20), spacing=2.0, center=(5, -3, 7))
    for other in (vol.resample(3.0), vol.downsample(2)):
        assert np.allclose(other.center, vol.center)
        lo, hi = other.bounding_box()
        lo0, hi0 = vol.bounding_box()
        assert np.allclose(lo, lo0, atol=2) and np.allclose(hi, hi0, atol=2)
    # mean attenuation is preserved by block averaging
    assert float(vol.downsample(2).data.mean()) == pytest.approx(float(vol.data.mean()), rel=1e-5)


def test_bad_volumes(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_volume(tmp_path / "nope.nii.gz")
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="corrupt.nii.gz: cannot read"):
        load_volume(bad)
    flat = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.Image(10, 10, sitk.sitkFloat32), str(flat))
    with pytest.raises(ValueError, match="flat.mha: image: expected a 3D scalar image"):
        load_volume(flat)
    nan = np.zeros((3, 3, 3), np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="1 voxel"):
        Volume.from_numpy(nan)
    with pytest.raises(ValueError, match="spacing"):
        Volume.from_numpy(np.zeros((3, 3, 3)), spacing=(1, 0, 1))
    with pytest.raises(ValueError, match="orthonormal"):
        Volume.from_numpy(np.zeros((3, 3, 3)), direction=np.diag([1, 2, 1.0]))
    with pytest.raises(ValueError, match="3D array"):
        Volume.from_numpy(np.zeros((3, 3)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no DICOM series"):
        load_volume(empty)


def _nifti1_int16_with_intercept(path, arr: np.ndarray, spacing=(0.7, 0.7, 2.5), truncate: int = 0,
                                 sform: np.ndarray | None = None, codes: tuple[int, int] = (0, 1)) -> None:
    """A NIfTI-1 file written byte by byte (not by SimpleITK): int16 storage, scl_slope 1 and
    scl_inter -1024, as scanners export CTs. ``truncate`` drops that many data bytes. ``spacing``
    is pixdim; the sform (voxel -> RAS, ``(3, 4)``) defaults to the one pixdim gives; ``codes``:
    qform_code, sform_code (the qform's quaternion and offset are zero: identity, at the origin)."""
    import gzip
    import struct

    z, y, x = arr.shape
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, x, y, z, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, 4, 16)  # datatype int16, bitpix 16
    struct.pack_into("<8f", h, 76, 1.0, *spacing, 1, 1, 1, 1)
    struct.pack_into("<fff", h, 108, 352.0, 1.0, -1024.0)  # vox_offset, scl_slope, scl_inter
    struct.pack_into("<B", h, 123, 2)  # xyzt_units: mm
    struct.pack_into("<hh", h, 252, *codes)
    if sform is None:
        sform = np.diag([-spacing[0], -spacing[1], spacing[2], 0.0])[:3]
    struct.pack_into("<12f", h, 280, *np.asarray(sform, dtype=np.float64).ravel())
    h[344:348] = b"n+1\0"
    data = (arr + 1024).astype("<i2").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(bytes(h) + b"\0" * 4 + data[:len(data) - truncate])


def test_nifti_stored_int16_with_intercept_loads_and_truncation_is_refused(tmp_path, rng):
    hu = rng.integers(-1000, 2000, size=(6, 5, 4)).astype(np.float32)
    good = tmp_path / "ct.nii.gz"
    _nifti1_int16_with_intercept(good, hu)
    vol = load_volume(good)  # ITK reports the scaled float type; the stored bytes are int16
    np.testing.assert_array_equal(vol.data.numpy(), hu)
    np.testing.assert_allclose(vol.spacing, (0.7, 0.7, 2.5), rtol=1e-6)
    bad = tmp_path / "cut.nii.gz"
    _nifti1_int16_with_intercept(bad, hu, truncate=40)
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: truncated.*16 bits \(240 bytes\)"):
        load_volume(bad)


def test_a_nifti_whose_sform_scales_differ_from_pixdim_is_placed_by_its_sform(tmp_path, rng):
    """ITK reads such a header's voxel sizes from pixdim ("unexpected scales in sform"); the
    NIfTI standard (sform_code > 0) and nibabel place the voxels by the sform."""
    hu = rng.integers(-1000, 2000, size=(6, 5, 4)).astype(np.float32)
    ras = np.c_[rotvec_to_matrix(np.array([0.3, -0.5, 0.7])) * [0.7, 1.3, 2.1], [12.0, -30.0, 7.5]]
    path = tmp_path / "ct.nii.gz"
    _nifti1_int16_with_intercept(path, hu, spacing=(1.0, 1.0, 1.0), sform=ras)
    with pytest.warns(UserWarning, match=r"sform gives voxels of 0\.7 x 1\.3 x 2\.1 mm, its pixdim 1 x 1 x 1 mm"):
        vol = load_volume(path)
    ijk = rng.uniform(0, 5, (10, 3))
    want = (np.diag([-1.0, -1.0, 1.0]) @ (ras[:, :3] @ ijk.T + ras[:, 3:])).T  # RAS -> LPS
    np.testing.assert_allclose(vol.index_to_world(ijk), want, atol=1e-5)
    np.testing.assert_array_equal(vol.data.numpy(), hu)
    # pixdim equal to the sform's scales: ITK's reading stands, with no warning
    same = tmp_path / "same.nii.gz"
    _nifti1_int16_with_intercept(same, hu, spacing=(0.7, 1.3, 2.1), sform=ras)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(load_volume(same).index_to_world(ijk), want, atol=1e-5)
    # A scanner qform beside an aligned-space sform (code 2): ITK places the file by its qform, and
    # so does load_volume, without a warning (the sform's scales are not the placement's)
    aligned = tmp_path / "aligned.nii.gz"
    _nifti1_int16_with_intercept(aligned, hu, spacing=(1.0, 1.0, 1.0), sform=ras, codes=(1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol = load_volume(aligned)
    itk = sitk.ReadImage(str(aligned))
    np.testing.assert_allclose(vol.index_to_world(ijk), [itk.TransformContinuousIndexToPhysicalPoint(p.tolist())
                                                          for p in ijk], atol=1e-6)
    np.testing.assert_allclose(vol.spacing, (1.0, 1.0, 1.0))

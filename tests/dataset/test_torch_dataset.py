import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stereodrr.dataset import (
    StereoDRRDataset,
    generate_dataset,
    item_pose,
    item_rig,
    load_subject,
    posed_volume,
    sample_item,
    validate_config,
)
from stereodrr.render import Projector, render_drr


@pytest.fixture
def noiseless(tmp_path, tiny_raw):
    tiny_raw["output"] = {"format": "tiff32"}
    tiny_raw["detector"] = {"noise": "none", "photons_per_pixel": [1e3, 1e4]}
    cfg = validate_config(tiny_raw)
    generate_dataset(cfg, tmp_path / "ds", 3, workers=0, progress=False)
    return cfg, tmp_path / "ds"


def test_samples_hold_images_and_geometry(noiseless):
    cfg, root = noiseless
    ds = StereoDRRDataset(root)
    assert len(ds) == 3 and ds.views == ["left", "right"]
    s = ds[1]
    assert s["image"].shape == (2, 24, 32) and s["image"].dtype == torch.float32
    sample = sample_item(cfg, 1)
    subject = load_subject(cfg)
    rig = item_rig(sample, subject.center)
    T = item_pose(sample, subject.center)
    assert torch.equal(s["pose"], torch.as_tensor(np.array(T))) and int(s["item"]) == 1
    assert torch.equal(s["K"][1], torch.as_tensor(np.array(rig["right"].K)))
    # Noise-free: the negative-log image is the line integral, -log(I0 exp(-L) / I0) = L.
    L = render_drr(posed_volume(subject.volume, T), rig, projector=Projector(mode=cfg["render"]["mode"]))
    assert torch.allclose(s["image"], L, atol=1e-4)
    counts = StereoDRRDataset(root, image="counts")[1]["image"]
    assert torch.allclose(counts, sample.photons_per_pixel * torch.exp(-L), rtol=1e-5)


def test_dataloader_batches(noiseless):
    _, root = noiseless
    batch = next(iter(DataLoader(StereoDRRDataset(root, views=["right"]), batch_size=2)))
    assert batch["image"].shape == (2, 1, 24, 32) and batch["P"].shape == (2, 1, 3, 4)
    assert batch["markers_uv"].shape == (2, 1, 0, 2)


def test_png16_counts_and_bad_input(tmp_path, tiny_config):
    generate_dataset(tiny_config, tmp_path / "ds", 2, workers=0, progress=False)
    ds = StereoDRRDataset(tmp_path / "ds", image="stored", verify=True)
    stored = ds[0]["image"]
    assert float(stored.max()) == 65535.0
    counts = StereoDRRDataset(tmp_path / "ds", image="counts")[0]["image"]
    scales = torch.tensor([float(ds._groups[0].loc[v, "scale"]) for v in ds.views])
    assert torch.allclose(counts * scales[:, None, None], stored, rtol=1e-6)
    # Poisson counts average to I0 exp(-L) (768 pixels per view: 1% is many standard errors).
    subject = load_subject(tiny_config)
    sample = sample_item(tiny_config, 0)
    L = render_drr(posed_volume(subject.volume, item_pose(sample, subject.center)), item_rig(sample, subject.center))
    expected = sample.photons_per_pixel * torch.exp(-L)
    assert torch.allclose(counts.mean((1, 2)), expected.mean((1, 2)), rtol=0.01)
    with pytest.raises(ValueError, match="image: expected one of"):
        StereoDRRDataset(tmp_path / "ds", image="raw")
    with pytest.raises(ValueError, match="no view"):
        StereoDRRDataset(tmp_path / "ds", views=["frontal"])
    with pytest.raises(FileNotFoundError, match="manifest"):
        StereoDRRDataset(tmp_path)
    with pytest.raises(IndexError):
        ds[5]
    path = tmp_path / "ds" / ds._groups[1].loc["right", "file"]
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    img[0, 0] ^= 1
    cv2.imwrite(str(path), img)
    with pytest.raises(ValueError, match="checksum"):
        ds[1]


@pytest.mark.parametrize("noise", ["none", "poisson"])
def test_gain_and_offset_count_once_and_come_off_the_line_integral(tmp_path, tiny_raw, noise):
    """Counts are ``gain N0 exp(-L) + offset`` with or without noise (the noiseless path scaled
    the offset by the dose), and the negative-log image takes both off: L again."""
    tiny_raw["output"] = {"format": "tiff32"}
    tiny_raw["detector"] = {"noise": noise, "photons_per_pixel": [1e4, 1e4], "gain": 2.0, "offset": 100.0,
                            "electronic_sigma": [0, 0], "blur_px": [0, 0]}
    tiny_raw["rig"]["pixel_spacing_mm"] = 10.0
    tiny_raw["pose"] = {"translation_mm": [[200, 200], [0, 0], [0, 0]]}  # the torso to one side: open field
    cfg = validate_config(tiny_raw)
    generate_dataset(cfg, tmp_path / "ds", 1, workers=0, progress=False)
    sample, subject = sample_item(cfg, 0), load_subject(cfg)
    T = item_pose(sample, subject.center)
    L = render_drr(posed_volume(subject.volume, T), item_rig(sample, subject.center),
                   projector=Projector(mode=cfg["render"]["mode"]))
    counts = StereoDRRDataset(tmp_path / "ds", image="counts")[0]["image"]
    line = StereoDRRDataset(tmp_path / "ds", image="line_integral")[0]["image"]
    if noise == "none":
        torch.testing.assert_close(counts, 2.0 * 1e4 * torch.exp(-L) + 100.0, rtol=2e-4, atol=1e-2)
        torch.testing.assert_close(line, L, rtol=1e-4, atol=1e-4)
    else:  # Poisson: the open field (L = 0) about gain N0 + offset, its -log about 0
        air = L < 1e-6
        assert air.sum() > 20
        assert abs(float(counts[air].mean()) / (2e4 + 100.0) - 1) < 0.01 and abs(float(line[air].mean())) < 0.01

"""Tutorial: generate a stereo DRR dataset and train a small PyTorch model on it.

A config says what to sample per item (stereo angle, distances, subject pose, dose); the
generator renders every view with its exact geometry and writes images plus a Parquet manifest;
:class:`stereodrr.StereoDRRDataset` serves them to PyTorch. The model here learns the subject's
rotation about the vertical axis from the two views, a toy stand-in for pose regression.

    python docs/tutorials/dataset_training.py --out out/tutorial_dataset            # 256 items, 64² views
    python docs/tutorials/dataset_training.py --out out/tutorial_dataset --quick    # 48 items, 32 x 24 views
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, random_split

import stereodrr as sd


def config(quick: bool) -> dict:
    """The dataset config (``stereodrr dataset --config cfg.json`` reads the same as JSON)."""
    size, spacing, det, pixel = ([24, 18, 16], 12.0, [32, 24], 6.4) if quick else ([64, 48, 40], 5.0, [64, 64], 4.0)
    return {
        "seed": 1,
        "subject": {"kind": "torso", "size": size, "spacing_mm": spacing},   # or {"kind": "volume", "path": "ct.nii.gz"}
        "rig": {"stereo_angle_deg": [4, 6], "detector_px": det, "pixel_spacing_mm": pixel},
        "pose": {"rotation_deg": [[0, 0], [0, 0], [-30, 30]], "translation_mm": [[-5, 5], [-5, 5], [-5, 5]]},
        "detector": {"photons_per_pixel": [5e3, 2e4], "noise": "poisson"},
        "output": {"format": "tiff32"},
    }


class StereoNet(nn.Module):
    """Two views in (as channels), one number out."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(32 * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)


def rotation_about_z_deg(pose: torch.Tensor) -> torch.Tensor:
    """The rotation about the world's z axis of (B, 4, 4) poses (the config samples only that one)."""
    return torch.rad2deg(torch.atan2(pose[:, 1, 0], pose[:, 0, 0]))


def main(argv: list[str] | None = None) -> dict:
    """Run the tutorial; returns the validation error before and after training (degrees)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/tutorial_dataset", help="output folder")
    p.add_argument("--quick", action="store_true", help="a tiny dataset and a few epochs (the test suite's setting)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n, epochs = (48, 8) if args.quick else (256, 30)

    # 1. Generate. Item i depends only on (seed, i): shards, workers and resumed runs write the
    #    same bytes. workers=0 renders in this process (workers=N needs the dask extra).
    cfg = config(args.quick)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    report = sd.generate_dataset(sd.load_config(out / "config.json"), out / "data", n, workers=0, progress=False)
    print(report)

    # 2. Read it: each item holds the views' images (line integrals here), K, R, t, P, the
    #    subject pose and the markers' ground truth.
    data = sd.StereoDRRDataset(out / "data", image="line_integral")
    item = data[0]
    print(f"{len(data)} items; image {tuple(item['image'].shape)}, views {item['views']}, "
          f"stereo angle {float(item['stereo_angle_deg']):.2f} deg")

    # 3. Train: the two views as two channels, the rotation about z (degrees / 30) as the target.
    torch.manual_seed(0)
    train, val = random_split(data, [n - n // 4, n // 4], generator=torch.Generator().manual_seed(0))
    model = StereoNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def batches(subset, shuffle):
        for b in DataLoader(subset, batch_size=16, shuffle=shuffle):
            x = b["image"].float()
            yield (x - x.mean()) / (x.std() + 1e-6), rotation_about_z_deg(b["pose"]).float() / 30.0

    def val_error_deg() -> float:
        model.eval()
        with torch.no_grad():
            errs = [((model(x) - y) * 30.0).square() for x, y in batches(val, False)]
        model.train()
        return math.sqrt(float(torch.cat(errs).mean()))

    before = val_error_deg()
    for _ in range(epochs):
        for x, y in batches(train, True):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = val_error_deg()
    print(f"validation RMS error of the rotation: {before:.1f} deg untrained -> {after:.1f} deg after {epochs} epochs")
    torch.save(model.state_dict(), out / "model.pt")
    return {"before_deg": before, "after_deg": after}


if __name__ == "__main__":
    main()

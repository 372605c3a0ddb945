"""Where calibration through an intensifier loses accuracy: ball centres found on recorded
(distorted) shots against where the field puts the balls (issue 23).

The demo's shots of ``distortion_calibration.py`` (the LEGO stereo phantom, a 5 deg pair
perturbed from nominal at ``--seed``, 1024^2 at 0.15 mm, blur 0.5 px; ``--photons`` per pixel
with read-out noise 2, or noise-free with ``--photons 0``), once through a flat panel and once
through the ``--field`` intensifier per view (``strong``; ``identity``: the same chain with a
field that moves nothing), the input screen ``--oversample`` times finer than the recorded pixels.
Balls are detected on both (calibration's stage 1) and compared with the truth: the exact
projected centres on the flat panel; on the recorded shots the field's image of them. Each
view's map is measured from a hex grid image (1e4 photons/px), and the corrected centres are
compared with the truth carried into the map's frame (the similarity a grid map leaves free,
fitted on the true centres), three ways: the map at the detected centre, and the map's mean over
a circle of half and of the full fitted radius around it (the field's curvature across the ball's
rim). Prints one line per view (RMS in px). ``--oversample`` above the imaging chain's limit
(``MAX_OVERSAMPLE``) raises that limit for this run only. Example::

    PYTHONPATH=. python experiments/distortion_detection.py --seed 3 --photons 0
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from distortion_calibration import grid_maps, pair_fields  # noqa: E402
from distortion_registration import similarity_2d  # noqa: E402

import stereodrr.imaging.detector as detector_module  # noqa: E402
from stereodrr.calib import CalibrationOptions  # noqa: E402
from stereodrr.calib.pipeline import detect  # noqa: E402
from stereodrr.calib.scene import flat_panel, perturbed_rig, render_calibration_images  # noqa: E402
from stereodrr.distortion import GridPlate  # noqa: E402
from stereodrr.geometry import StereoRig  # noqa: E402
from stereodrr.phantoms import load_phantom  # noqa: E402


def rms(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(np.square(e), axis=-1))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--photons", type=float, default=1e4, help="photons per pixel; 0: noise-free")
    ap.add_argument("--field", choices=("strong", "identity"), default="strong")
    ap.add_argument("--oversample", type=int, default=3, help="input-screen sampling per recorded pixel axis")
    ap.add_argument("--size", type=int, default=1024, help="detector pixels per side (pitch scaled)")
    args = ap.parse_args(argv)
    if args.oversample > detector_module.MAX_OVERSAMPLE:
        print(f"note: --oversample {args.oversample} is above the chain's limit {detector_module.MAX_OVERSAMPLE}; "
              "raised for this run")
        detector_module.MAX_OVERSAMPLE = args.oversample
    n = args.size
    nominal = StereoRig.convergent(5.0, 750.0, 1200.0, 0.15 * 1024 / n, n, n)
    truth = perturbed_rig(nominal, seed=args.seed)
    phantom = load_phantom("lego_stereo")
    photons = args.photons if args.photons > 0 else None
    panel = flat_panel(photons, 2.0 if photons else 0.0, 0.5)
    shots = render_calibration_images(phantom, truth, panel, seed=args.seed, progress=False)
    zero = dict(k1=0.0, k2=0.0, s_deg=0.0, p1=0.0, p2=0.0) if args.field == "identity" else {}
    fields = pair_fields("strong", n, nominal.names, fov_radius=math.inf, **zero)
    recorded = {v: render_calibration_images(phantom, truth, panel.with_(distortion=fields[v],
                                                                         distortion_oversample=args.oversample),
                                             seed=args.seed, progress=False).images[v] for v in nominal.names}
    options = CalibrationOptions(kind=shots.kind, seed=args.seed, progress=False)
    flat = detect(shots.images, phantom.marker_table(), nominal, options)
    through = detect(recorded, phantom.marker_table(), nominal, options)
    ring = np.stack([np.cos(t := np.linspace(0, 2 * np.pi, 32, endpoint=False)), np.sin(t)], -1)
    print(f"seed {args.seed}, {'noise-free' if photons is None else f'{photons:g} photons/px'}, {args.field} field, "
          f"input screen {args.oversample}x finer (ball centre RMS, px)")
    maps = grid_maps(fields, GridPlate("hex", 32.0 * n / 1024, 16.0 * n / 1024))
    for v in nominal.names:
        m = maps[v]
        true = shots.centres_px[v]
        uv0 = flat[v][["u", "v"]].to_numpy()
        _, i0 = cKDTree(true).query(uv0)
        true_rec = np.asarray(fields[v].distort(true))
        uv = through[v][["u", "v"]].to_numpy()
        rho = through[v]["diameter_px"].to_numpy() / 2
        _, i1 = cKDTree(true_rec).query(uv)
        ideal = np.asarray(fields[v].undistort(true_rec[i1]))
        S = similarity_2d(ideal, np.asarray(m.undistort_points(true_rec[i1])))
        target = ideal @ S[:2, :2].T + S[:2, 2]
        corrected = [np.asarray(m.undistort_points(uv[:, None, :] + math.sqrt(a) * rho[:, None, None] * ring[None])).mean(1)
                     for a in (0.0, 0.5, 1.0)]
        print(f"{v}: flat panel {rms(uv0 - true[i0]):.4f}; recorded {rms(uv - true_rec[i1]):.4f}; map at the true "
              f"centres {rms(np.asarray(m.undistort_points(true_rec[i1])) - target):.4f}; corrected: at the centre "
              f"{rms(corrected[0] - target):.4f}, mean over half the radius {rms(corrected[1] - target):.4f}, "
              f"over the rim {rms(corrected[2] - target):.4f} ({len(uv)} balls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

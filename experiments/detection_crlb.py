"""Ball-centre detection on noisy raw frames against the Cramér–Rao bound (issue 11).

One view of a marker phantom from the independent simulator of the tests
(``tests/calib/xray_sim.py``: steel balls in a 110 mm water ball, area-integrated pixels, blur
0.5 px) on its 900 x 700 x 0.2 mm rig. The bound of each ball's centre, per image axis, is
``1 / sqrt(F)`` with the Poisson Fisher information ``F = sum_pixels (d lambda / d u)^2 / lambda``
of the expected counts ``lambda``, ``d lambda / d u`` by finite differences of the noise-free
image under a sub-pixel shift of the phantom. ``detect_markers`` then runs on ``--seeds``
Poisson draws and its per-axis RMS error is printed next to the bound.

:func:`triangulation_bound_mm` carries the centre bounds of every view of a rig into 3D: the
Fisher information of a ball's position is ``sum_views J^T diag(1 / sigma^2) J`` with ``J`` the
``2 x 3`` Jacobian of its projection (``calib.triangulate.predicted_error``), so
``sqrt(trace(F^-1))`` is the smallest RMS error of any unbiased triangulation from those images,
even with the rig known exactly.

    PYTHONPATH=. python experiments/detection_crlb.py --phantom lego_cube --seeds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stereodrr.calib.detect import detect_markers  # noqa: E402
from stereodrr.calib.triangulate import predicted_error  # noqa: E402
from stereodrr.geometry import StereoRig  # noqa: E402
from stereodrr.phantoms import load_phantom  # noqa: E402
from tests.calib.xray_sim import odd_rig, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIFT_MM = 1e-3
WINDOW_PX = 14


def crlb_px(cam, table, photons: float, blur_px: float) -> tuple[np.ndarray, np.ndarray]:
    """``(M, 2)`` Cramér–Rao bound of every ball's centre (px, per axis), and the ``(M, 2)`` exact
    projected centres."""
    base, centres = simulate(cam, table, photons=None, blur_px=blur_px)
    lam = photons * np.exp(-base)
    info = np.zeros((len(table), 2))
    for axis in (0, 1):
        moved = table.copy()
        for k, col in enumerate("xyz"):  # move the phantom along the camera's own axis
            moved[col] = table[col] + SHIFT_MM * cam.R[axis][k]
        img, c_moved = simulate(cam, moved, photons=None, blur_px=blur_px)
        dlam = photons * np.exp(-img) - lam
        shift_px = (c_moved - centres)[:, axis]
        for m, ((uc, vc), s) in enumerate(zip(centres, shift_px)):
            win = (slice(max(int(vc) - WINDOW_PX, 0), int(vc) + WINDOW_PX + 1),
                   slice(max(int(uc) - WINDOW_PX, 0), int(uc) + WINDOW_PX + 1))
            info[m, axis] = np.sum((dlam[win] / s) ** 2 / lam[win])
    return 1.0 / np.sqrt(info), centres


def triangulation_bound_mm(rig: StereoRig, table, photons: float, blur_px: float) -> np.ndarray:
    """``(M,)`` Cramér–Rao bound of each ball's 3D position (mm, RMS of the error vector)
    triangulated from all views of ``rig`` at ``photons`` per pixel."""
    sigma = np.stack([crlb_px(cam, table, photons, blur_px)[0] for cam in rig.cameras.values()])
    depth, inplane = predicted_error(list(rig.cameras.values()), table[["x", "y", "z"]].to_numpy(float), sigma)
    return np.hypot(depth, inplane)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", default="lego_cube")
    ap.add_argument("--photons", type=float, default=1e4)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    table = load_phantom(ROOT / "phantoms" / f"{args.phantom}.json").marker_table()
    cam = odd_rig("horizontal", 5.0).cameras["left"]
    bound, exact = crlb_px(cam, table, args.photons, 0.5)
    errors = []
    for seed in range(args.seeds):
        img, _ = simulate(cam, table, photons=args.photons, blur_px=0.5, seed=seed)
        uv = detect_markers(img)[["u", "v"]].to_numpy()
        dist = np.linalg.norm(uv[:, None] - exact[None], axis=2)
        near = dist.min(1) < 2.0
        errors.append(uv[near] - exact[dist.argmin(1)[near]])
        print(f"seed {seed}: {near.sum()} of {len(exact)} balls, RMS per axis {np.sqrt((errors[-1] ** 2).mean(0)).round(4)}")
    e = np.concatenate(errors)
    rms, bound_rms = np.sqrt((e**2).mean(0)), np.sqrt((bound**2).mean(0))
    print(f"{args.phantom}: detection RMS (u, v) {rms.round(4)} px, Cramér–Rao bound RMS {bound_rms.round(4)} px, "
          f"ratio {(rms / bound_rms).round(2)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

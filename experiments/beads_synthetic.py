"""``stereodrr beads`` on synthetic Autoscoper trials with known beads, bodies and motions.

Each case renders a trial with :mod:`tests.track.synthetic_trial` (spheres through real MayaCam
calibrations, area-integrated shadows, tissue, Poisson noise; frames written as TIFF), runs the
command line ``stereodrr beads --trial CFG -o OUT --no-figures`` and measures against the truth:
beads found per view and frame (detections within 1.5 px of a true centre, and others), the
triangulation error (mm), the reprojection median (px), the bodies found and their beads, and
each body's motion from its first frame against the true one.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/beads_synthetic.py [CASE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from stereodrr.cli import main as cli  # noqa: E402
from stereodrr.interop.xmalab import load_rigid_body_transforms  # noqa: E402
from tests.track.synthetic_trial import make_trial  # noqa: E402

CAL = ROOT / "tests" / "data" / "autoscoper_wrist" / "Calibration"
WRIST = [CAL / "xr_calib_wrist_cam01.txt", CAL / "xr_calib_wrist_cam02.txt"]
ANKLE = [CAL / "xr_calib_right_ankle_cam01.txt", CAL / "xr_calib_right_ankle_cam02.txt"]
KNEE = [CAL / "xr_calib_left_knee_cam01.txt", CAL / "xr_calib_left_knee_cam02.txt"]

CASES: dict[str, dict] = {
    "wrist_1mm_u8": dict(cams=WRIST),
    "ankle_1mm_u8": dict(cams=ANKLE),
    "knee_1mm_u8": dict(cams=KNEE),
    "ankle_1mm_u16": dict(cams=ANKLE, dtype="uint16"),
    "knee_1mm_inverted": dict(cams=KNEE, inverted=True),
    "ankle_2mm": dict(cams=ANKLE, bead_mm=2.0),
    "knee_2mm": dict(cams=KNEE, bead_mm=2.0),
    "knee_0.5mm": dict(cams=KNEE, bead_mm=0.5, mu_per_mm=2.0, blur_px=0.9),
    "knee_mixed": dict(cams=KNEE, bead_mm=(0.8, 1.6)),
    "knee_4bodies": dict(cams=KNEE, n_bodies=4, spacing_mm=40.0),
    "knee_noisy": dict(cams=KNEE, counts=150.0),
    "knee_no_beads": dict(cams=KNEE, no_beads=True),
    "knee_edge": dict(cams=KNEE, offset_mm=(0.0, 0.0, 0.0), n_bodies=3, spacing_mm=75.0, step_mm=6.0),
}


def evaluate(name: str, spec: dict, seed: int = 0, keep: Path | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"beads_{name}_")) if keep is None else keep / name
    args = dict(spec)
    cams = args.pop("cams")
    truth = make_trial(tmp, cams, np.random.default_rng(seed), **args)
    out = tmp / "out"
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        rc = cli(["beads", "--trial", str(truth.cfg), "-o", str(out), "--no-figures"])
    assert rc == 0, log.getvalue()
    det = pd.read_csv(out / "detections.csv")
    beads = pd.read_csv(out / "beads.csv").dropna(subset=["x"])
    summary = json.loads((out / "summary.json").read_text())
    F, B = truth.positions.shape[:2]
    no_beads = spec.get("no_beads", False)
    res: dict = {"case": name}
    # Detections per view and frame against the true projections inside the image.
    found, extra, expected = [], [], []
    for c, cam in truth.cameras.items():
        for f in range(F):
            uv = truth.uv[c][f]
            inside = (uv[:, 0] > 60) & (uv[:, 0] < cam.width - 60) & (uv[:, 1] > 60) & (uv[:, 1] < cam.height - 60)
            r = np.hypot(uv[:, 0] - cam.width / 2, uv[:, 1] - cam.height / 2) < 0.94 * 0.5 * min(cam.width, cam.height) - 20
            d = det[(det["frame"] == f) & (det["camera"] == c)][["u", "v"]].to_numpy()
            if no_beads:
                expected.append(0)
                found.append(0)
                extra.append(len(d))
                continue
            D = np.linalg.norm(d[:, None] - uv[None], axis=2) if len(d) else np.full((0, B), np.inf)
            hit = (D < 1.5).any(axis=0) if len(d) else np.zeros(B, bool)
            expected.append(int((inside & r).sum()))
            found.append(int((hit & inside & r).sum()))
            extra.append(int((~(D < 1.5).any(axis=1)).sum()) if len(d) else 0)
    res["detected/expected"] = f"{sum(found)}/{sum(expected)}"
    res["false_det"] = int(sum(extra))
    # Triangulated beads against the truth.
    errs, wrong = [], 0
    track_to_truth: dict[int, list[int]] = {}
    for _, row in beads.iterrows():
        f = int(row["frame"])
        d = np.linalg.norm(truth.positions[f] - row[["x", "y", "z"]].to_numpy(float), axis=1)
        j = int(np.argmin(d))
        if d[j] < 2.0 and not no_beads:
            errs.append(d[j])
            track_to_truth.setdefault(int(row["bead"]), []).append(j)
        else:
            wrong += 1
    res["triangulated"] = len(beads)
    res["tri_wrong"] = wrong
    res["tri_err_median_mm"] = float(np.median(errs)) if errs else None
    res["tri_err_max_mm"] = float(np.max(errs)) if errs else None
    res["reproj_median_px"] = summary["reprojection_median_px"]
    # Bodies against the truth.
    bodies = pd.read_csv(out / "bodies.csv")
    got = bodies[bodies["body"] >= 0]
    res["bodies_found"] = int(got["body"].nunique())
    res["bodies_true"] = 0 if no_beads else int(truth.body.max() + 1)
    membership = []
    for _b, g in got.groupby("body"):
        true_beads = [int(pd.Series(track_to_truth.get(int(t), [-1])).mode()[0]) for t in g["bead"]]
        true_body = [int(truth.body[j]) if j >= 0 else -1 for j in true_beads]
        tb = max(set(true_body), key=true_body.count)
        membership.append(f"{len(g)}/{int((truth.body == tb).sum())}" + ("" if set(true_body) == {tb} else "(mixed)"))
    res["membership"] = " ".join(membership)
    res["beads_in_no_body"] = int((bodies["body"] < 0).sum())
    # Poses: each found body's motion from its first frame against the truth.
    pose_t, pose_r = [], []
    if len(got):
        names, T = load_rigid_body_transforms(out / "rigid_bodies.csv")
        for k, (_b, g) in enumerate(got.groupby("body")):
            true_beads = [int(pd.Series(track_to_truth.get(int(t), [-1])).mode()[0]) for t in g["bead"]]
            tb_list = [int(truth.body[j]) for j in true_beads if j >= 0]
            if not tb_list:
                continue
            tb = max(set(tb_list), key=tb_list.count)
            frames = [f for f in range(F) if np.all(np.isfinite(T[f, k]))]
            if not frames:
                continue
            f0 = frames[0]
            c = truth.positions[f0, truth.body == tb].mean(axis=0)
            for f in frames[1:]:
                Mt = truth.motions[f, tb] @ np.linalg.inv(truth.motions[f0, tb])
                Mg = T[f, k]
                pose_t.append(np.linalg.norm(Mg[:3, :3] @ c + Mg[:3, 3] - Mt[:3, :3] @ c - Mt[:3, 3]))
                dR = Mg[:3, :3] @ Mt[:3, :3].T
                pose_r.append(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1))))
    res["pose_err_max_mm"] = float(np.max(pose_t)) if pose_t else None
    res["pose_err_max_deg"] = float(np.max(pose_r)) if pose_r else None
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", default=list(CASES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", type=Path, default=None, help="render into this folder (kept)")
    a = p.parse_args()
    rows = [evaluate(c, CASES[c], a.seed, a.keep) for c in a.cases]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()

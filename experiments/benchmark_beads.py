"""Bead detection time per 1760 x 1760 frame (goal: at most 1 s on 2 CPU cores), on the six frames
of the Autoscoper wrist sample, and the rest of the pipeline (matching, linking, rigid bodies).
Each camera is searched as :func:`track_beads` searches it: for beads of
``BeadTrackOptions().bead_mm`` at that camera's magnification (:func:`bead_diameter_px`).

Each frame is detected ``--repeats`` times after one warm-up; the script prints the median and
the largest time per frame, and the time of the whole :func:`track_beads` per frame. ``--threads`` caps OpenCV's and the BLAS's threads (set
before numpy loads).

    PYTHONPATH=. python experiments/benchmark_beads.py --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="CPU threads for OpenCV and the BLAS")
    p.add_argument("--repeats", type=int, default=5, help="timed detections per frame")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import cv2
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dataclasses import replace

    from beads_wrist import TRIAL

    from stereodrr.track.bead_detect import BeadDetectOptions, detect_beads
    from stereodrr.track.beads import BeadTrackOptions, bead_diameter_px, track_beads
    from stereodrr.trial import load_trial, read_frame

    cv2.setNumThreads(args.threads)
    trial = load_trial(TRIAL)
    rig = trial.rig
    frames = [[read_frame(f) for f in trial.frames[c]] for c in rig.names]
    masks = [trial.field(c).mask(frames[k][0].shape) for k, c in enumerate(rig.names)]
    bead_mm = BeadTrackOptions().bead_mm
    assert bead_mm is not None
    opts = [replace(BeadDetectOptions(), diameter_px=bead_diameter_px(rig[c], rig.isocenter, bead_mm)) for c in rig.names]
    times = []
    for c, per_camera in enumerate(frames):
        for f, image in enumerate(per_camera):
            detect_beads(image, masks[c], opts[c])
            t = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                found = detect_beads(image, masks[c], opts[c])
                t.append(time.perf_counter() - start)
            times.append(t)
            lo, hi = opts[c].diameter_px
            print(f"camera {c + 1} frame {f}: {image.shape[1]} x {image.shape[0]}, widths {lo:.1f}-{hi:.1f} px, "
                  f"{len(found)} beads; "
                  f"median {np.median(t):.3f} s, max {np.max(t):.3f} s")
    all_t = np.array(times)
    print(f"detection per frame, {args.threads} thread(s): median {np.median(all_t):.3f} s, max {all_t.max():.3f} s "
          f"(goal <= 1 s)")
    start = time.perf_counter()
    track_beads(frames, rig, masks, BeadTrackOptions(progress=False))
    total = time.perf_counter() - start
    print(f"track_beads on {len(frames[0])} frames of {len(frames)} cameras: {total:.2f} s "
          f"({total / len(frames[0]):.2f} s per frame, detection in every camera included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

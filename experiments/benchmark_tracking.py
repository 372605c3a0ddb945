"""Seconds per tracked frame: a bone CT registered to two 1760 x 1760 views of the Autoscoper
wrist sample from the previous frame's pose (warm start), the default :class:`TrackOptions`.

The bone's pose on the first frame of the pair comes from ``--poses`` (``poses.csv`` of
``experiments/track_wrist.py``, or the bone's ``poses.csv`` from ``stereodrr track``) or, without it, from the global search (not timed). Then the
pair is tracked once to compile the kernels, then ``--repeat`` times, and the second frame's time (the warm-started one: cropping,
masks, the pyramid's registrations, the final loss) is printed with the median. Frames are read
and converted to line integrals before the clock starts.

    PYTHONPATH=. python experiments/benchmark_tracking.py --poses results/track_wrist/poses.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stereodrr.track.bone_fit import TrackOptions  # noqa: E402
from stereodrr.track.bones import track_bone  # noqa: E402
from stereodrr.trial import load_trial  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "tests" / "data" / "autoscoper_wrist" / "wrist.cfg"
BONES = {"radius": 0, "ulna": 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trial", type=Path, default=TRIAL, help="Autoscoper trial file (.cfg)")
    p.add_argument("--bone", choices=sorted(BONES), default="radius")
    p.add_argument("--frames", type=int, nargs=2, default=(1, 2), help="the pair: start frame, warm-started frame")
    p.add_argument("--poses", type=Path, help="poses.csv with the bone's pose on the first frame of the pair")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch/numba threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import numba
    numba.set_num_threads(args.threads)

    trial = load_trial(args.trial)
    volume = trial.volume(BONES[args.bone]).volume
    volume = volume.with_data(volume.data * (0.02 / 1000))
    pair = [trial.line_integrals(k) for k in args.frames]
    frames, masks = [f for f, _ in pair], [m for _, m in pair]
    options = TrackOptions(progress=False)
    init = None
    if args.poses is not None:
        table = pd.read_csv(args.poses)
        if "bone" in table:  # track_wrist.py's table of every bone (stereodrr track writes one per bone)
            table = table[table["bone"] == args.bone]
        row = table[table["frame"] == args.frames[0]]
        init = row[[f"m{r}{c}" for r in range(4) for c in range(4)]].to_numpy(float).reshape(4, 4) if len(row) == 1 else None
        if init is None or not np.all(np.isfinite(init)):
            print(f"{args.poses}: no pose of the {args.bone} on frame {args.frames[0]}; running the global search")
            init = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if init is None:
            first = track_bone(volume, trial.rig, frames[:1], options, masks=masks[:1])
            init = first.poses[0]
        rig = trial.rig
        track_bone(volume, rig, frames, options, init=init, masks=masks)  # compiles the renderer's kernels
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            tr = track_bone(volume, rig, frames, options, init=init, masks=masks)
            times.append(tr.seconds[1])
            print(f"frames {args.frames}: {time.perf_counter() - start:.2f} s in all; warm-started frame "
                  f"{tr.seconds[1]:.2f} s ({tr.status[1]}, from {tr.start[1]}, loss {tr.losses[1]:.4f})")
    crop = f"{rig.names[0]} {rig[rig.names[0]].width}x{rig[rig.names[0]].height}"
    print(f"{args.bone}, two views ({crop}), {args.threads} thread(s): median {np.median(times):.2f} s per "
          f"warm-started frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())

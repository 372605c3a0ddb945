"""Tutorial: track implanted beads and a bone through a real biplanar trial.

The Autoscoper wrist sample (``tests/data/autoscoper_wrist``: two cameras calibrated by
XMALab, three frames of 1760² radiographs, CTs of the radius and the ulna) is read from its
Autoscoper trial file. The beads implanted in the bones are found in every frame, matched
between the cameras, triangulated and grouped into rigid bodies; then the radius' CT is
registered to both views of each frame, starting from a pose placed by hand on the first one
(as an Autoscoper user does), and written as an Autoscoper ``.tra``.

The same from the command line: ``stereodrr beads --trial wrist.cfg -o out/beads`` and
``stereodrr track --trial wrist.cfg --volume 0 1 -o out/track``.

    python docs/tutorials/track_trial.py --out out/tutorial_track            # all three frames
    python docs/tutorials/track_trial.py --out out/tutorial_track --quick    # the bone on one frame
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from stereodrr.interop import save_points3d, save_tra
from stereodrr.registration import Level
from stereodrr.track import BeadTrackOptions, TrackOptions, track_beads, track_bone
from stereodrr.trial import load_trial, read_frame

TRIAL = Path(__file__).resolve().parents[2] / "tests" / "data" / "autoscoper_wrist" / "wrist.cfg"

# The radius' pose (CT -> world) on the first frame, placed by eye on the anatomy (rounded to the
# printed digits; projected back onto a rotation below).
RADIUS_FIRST_FRAME = np.array([[0.954566, 0.267751, -0.13082, 92.723997], [-0.160748, 0.092996, -0.982605, 115.634112],
                               [-0.250927, 0.95899, 0.131812, 59.236898], [0.0, 0.0, 0.0, 1.0]])


def main(argv: list[str] | None = None) -> dict:
    """Run the tutorial; returns the bead and bone results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trial", default=str(TRIAL), help="Autoscoper trial file (.cfg)")
    p.add_argument("--out", default="out/tutorial_track", help="output folder")
    p.add_argument("--quick", action="store_true", help="track the bone on the first frame only (the test suite's setting)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. The trial: cameras (XMALab's MayaCam calibrations), frames, volumes.
    trial = load_trial(args.trial)
    rig = trial.rig
    print(f"{args.trial}: cameras {rig.names}, {trial.n_frames} frames, volumes "
          f"{[v.name for v in trial.volumes]}")

    # 2. Beads: detected inside each camera's image-intensifier field, matched by epipolar
    #    geometry, triangulated, linked through the frames, grouped into rigid bodies.
    masks = [trial.field(c).mask((rig[c].height, rig[c].width)) for c in rig.names]
    beads = track_beads(lambda k, f: read_frame(trial.frames[rig.names[k]][f]), rig, masks,
                        BeadTrackOptions(progress=False), n_frames=trial.n_frames)
    bodies = beads.bodies[beads.bodies["body"] >= 0].groupby("body")["bead"].count()
    print(f"beads: {beads.bodies.shape[0]} tracked, rigid bodies of {list(bodies)} beads")
    points = beads.points3d.rename(columns={"bead": "marker"})[["frame", "marker", "x", "y", "z"]]
    save_points3d(points, out / "points3d.csv", trial.n_frames)    # XMALab's 3D point file

    # 3. The radius: its CT (bone-masked intensities, scaled to attenuation-like values), and
    #    every frame as line integrals -log(I/I0) with the intensifier's field as the mask.
    radius = trial.volume(0).volume
    radius = radius.with_data(radius.data * (0.02 / 1000))
    n = 1 if args.quick else trial.n_frames
    frames, frame_masks = zip(*(trial.line_integrals(k) for k in range(n)))

    # 4. Track: frame 0 from the hand-placed pose, each later frame warm-started from the
    #    motion so far.
    u, _, vt = np.linalg.svd(RADIUS_FIRST_FRAME[:3, :3])
    init = RADIUS_FIRST_FRAME.copy()
    init[:3, :3] = u @ vt
    #    --quick compares the images binned 8x then 4x (the default pyramid ends at 2x).
    options = TrackOptions(progress=False)
    if args.quick:
        options = replace(options, levels=(Level(8, 20, 1, optimizer="lbfgs"), Level(4, 20, 1, optimizer="lbfgs")))
    with warnings.catch_warnings():  # the CT's 0.625 mm slices are coarser than the detector's pixels: known here
        warnings.simplefilter("ignore", UserWarning)
        track = track_bone(radius, rig, list(frames), options, init=init, masks=list(frame_masks))
    for k in range(n):
        print(f"frame {k}: {track.status[k]}, loss {track.losses[k]:.3f}"
              f"{', doubtful: ' + track.reasons[k] if track.doubtful[k] else ''}, {track.seconds[k]:.1f} s")
    save_tra(track.poses, out / "radius.tra")                    # Autoscoper's tracking file
    moved = np.linalg.norm(track.poses[0][:3, 3] - init[:3, 3])
    print(f"frame 0 moved {moved:.2f} mm from the hand-placed start")
    return {"beads": beads, "track": track}


if __name__ == "__main__":
    main()

"""Study: when does a convergent stereo pair fix depth better than one cone-beam view?

A single cone-beam view of a known CT already measures depth: moving the CT along the beam
changes its magnification, so structures at a lateral distance ``x`` from the central ray move on
the detector by about ``M x dz / SOD``. A pair at stereo angle ``a`` adds parallax: each view
sees a depth shift ``dz`` as a lateral shift ``M dz sin(a/2)``, in opposite directions. The pair
beats the single view by much only where the parallax signal ``sin(a/2)`` is large against the
magnification signal ``x / SOD``, i.e. where the field's fan angle is narrow against the stereo
angle.

This script puts numbers on that with the Cramér–Rao bound of the registration
(:func:`stereodrr.registration.pose_crlb`): for the torso CT, a range of detector widths (field fan
angles) and stereo angles, the bound on the depth error of a single AP view and of the
convergent pair, and their ratio, the *depth gain* (all six pose parameters unknown; Poisson
noise, whose level cancels in the ratio). Two identical views would give sqrt(2).

Writes ``<out>/depth_information.csv`` and ``<out>/depth_information.png``::

    python experiments/depth_information.py --out out/depth_information
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from stereodrr.fileio import atomic_path
from stereodrr.geometry import StereoRig
from stereodrr.plot.register import plot_depth_information
from stereodrr.registration import pose_crlb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registration_mono_vs_stereo import SDD, SID, load_ct  # noqa: E402  the same CT and rig distances


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/depth_information")
    ap.add_argument("--size", type=int, default=128, help="detector pixels per side")
    ap.add_argument("--detectors-mm", type=float, nargs="+", default=[512, 300, 200, 128, 64, 32],
                    help="detector widths (mm); the field fan angle is 2 atan(w / 2 SDD)")
    ap.add_argument("--angles-deg", type=float, nargs="+", default=[1, 3, 5, 7, 10, 15, 20, 30, 45, 60, 90],
                    help="stereo angles of the convergent pair")
    ap.add_argument("--ct", choices=["torso_json", "builtin"], default="torso_json")
    ap.add_argument("--spacing", type=float, default=2.5, help="CT voxel size, mm")
    ap.add_argument("--photons", type=float, default=1e4, help="photons per unattenuated pixel (cancels in the gain)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # the rig's note on angles outside 3-7 deg
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    volume = load_ct(args.ct, args.spacing)

    rows = []
    with tqdm(total=len(args.detectors_mm) * (1 + len(args.angles_deg)), desc="Cramér–Rao bounds") as bar:
        for width in args.detectors_mm:
            common = dict(sid=SID, sdd=SDD, pixel_spacing=width / args.size, width=args.size, height=args.size)
            fan = math.degrees(2 * math.atan(width / 2 / SDD))
            single = pose_crlb(volume, StereoRig.arc(1, 0.0, names=("ap",), **common), photons=args.photons)
            bar.update()
            for angle in args.angles_deg:
                pair = pose_crlb(volume, StereoRig.convergent(angle, **common), photons=args.photons)
                bar.update()
                rows.append({"detector_mm": width, "field_mm": width * SID / SDD, "fan_deg": fan,
                             "stereo_deg": angle, "single_depth_mm": single["depth_mm"],
                             "pair_depth_mm": pair["depth_mm"], "single_inplane_mm": single["inplane_mm"],
                             "pair_inplane_mm": pair["inplane_mm"],
                             "depth_gain": single["depth_mm"] / pair["depth_mm"]})
    df = pd.DataFrame(rows)
    with atomic_path(out / "depth_information.csv") as tmp:
        df.to_csv(tmp, index=False)
    table = df.pivot(index="stereo_deg", columns="fan_deg", values="depth_gain")
    table.columns = [f"fan {c:.1f} deg" for c in table.columns]
    print(f"depth gain of the convergent pair over one view (Cramér–Rao bound), SID {SID:g} / SDD {SDD:g} mm:")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    plot_depth_information(df, out / "depth_information.png")
    print(f"wrote {out / 'depth_information.csv'} and {out / 'depth_information.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

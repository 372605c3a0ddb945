"""Tutorial: design a rig with the Cramér–Rao bound.

Before building a rig, ask how precisely it can measure at all. ``pose_crlb`` gives the
Cramér–Rao bound of a CT's pose from a set of views at a dose: the smallest standard deviation
of each rotation, in-plane and depth parameter any unbiased registration can reach (from the
Fisher information of the Poisson-noisy DRRs). Here it compares one view, convergent pairs of
3–15° and a biplanar pair on the torso phantom.

    python docs/tutorials/rig_design.py --out out/tutorial_rig_design            # 128² views
    python docs/tutorials/rig_design.py --out out/tutorial_rig_design --quick    # 48² views
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pandas as pd

import stereodrr as sd
from stereodrr.geometry import StereoAngleWarning
from stereodrr.registration import pose_crlb


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the tutorial; returns the table of bounds (also ``rig_design.csv``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/tutorial_rig_design", help="output folder")
    p.add_argument("--quick", action="store_true", help="a coarse CT and small views (the test suite's setting)")
    p.add_argument("--photons", type=float, default=1e4, help="photons per pixel without attenuation")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    size, spacing, pixels = ((48, 40, 32), 6.0, 48) if args.quick else ((96, 80, 64), 3.0, 128)
    hu = sd.torso_phantom(size=size, spacing=spacing)
    ct = hu.with_data(sd.hu_to_mu(hu.data))
    sid, sdd, field_mm = 750.0, 1200.0, 512.0
    pitch = field_mm / pixels

    # The candidate rigs, all with the same detector, source and isocenter distances: one view
    # (the left camera of the 5° pair alone), convergent pairs and a biplanar pair.
    with warnings.catch_warnings():  # 15° is outside the 3-7° band on purpose: the comparison
        warnings.simplefilter("ignore", StereoAngleWarning)
        pair = {angle: sd.StereoRig.convergent(angle, sid, sdd, pitch, pixels, pixels) for angle in (3.0, 5.0, 7.0, 15.0)}
    rigs = {"single view": sd.StereoRig({"left": pair[5.0]["left"]}, pair[5.0].isocenter)}
    rigs.update({f"convergent {angle:g}°": rig for angle, rig in pair.items()})
    rigs["biplanar"] = sd.StereoRig.biplanar(sid, sdd, pitch, pixels, pixels)

    rows = []
    for name, rig in rigs.items():
        bound = pose_crlb(ct, rig, photons=args.photons)
        rows.append({"rig": name, "views": len(rig.names), **{k: round(v, 5) for k, v in bound.items()}})
    table = pd.DataFrame(rows).set_index("rig")
    single = table.loc["single view", "depth_mm"]
    table["depth gain vs one view"] = (single / table["depth_mm"]).round(2)
    print(f"Cramér–Rao bound at {args.photons:g} photons/px (standard deviations; mm and degrees):")
    print(table[["views", "depth_mm", "inplane_mm", "rx_deg", "ry_deg", "rz_deg", "depth gain vs one view"]].to_string())
    table.to_csv(out / "rig_design.csv")
    return table


if __name__ == "__main__":
    main()

"""CPU time of a polychromatic two-view render against the monochromatic one (512 x 512 views).

Monochromatic: ``hu_to_mu`` and one ``render_rig`` of mu, ``exp(-L)`` per view. Polychromatic:
the soft-tissue / bone decomposition, one render per material channel, the spectrum sum of an
80 kVp Al:2.5 spectrum (ideal detector, no scatter) and ``-log``; and the ``fluoro80`` preset
(CsI, grid scatter, noise). Median of ``--repeats`` runs after one warm-up, on the built-in torso
(128 x 96 x 80 voxels of 2.5 mm). Writes ``benchmark_polychromatic.csv``.

    OMP_WAIT_POLICY=PASSIVE python experiments/benchmark_polychromatic.py --out out/studies
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from stereodrr.fileio import atomic_path  # noqa: E402
from stereodrr.geometry import StereoRig  # noqa: E402
from stereodrr.imaging import DetectorModel, detector_preset, render_polychromatic
from stereodrr.phantoms import torso_phantom  # noqa: E402
from stereodrr.physics import Spectrum  # noqa: E402
from stereodrr.render import render_rig  # noqa: E402
from stereodrr.volume import hu_to_mu  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/studies")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    hu = torso_phantom()
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.3 * 1024 / a.size, a.size, a.size, isocenter=hu.center)

    def mono() -> None:
        for img in render_rig(hu.with_data(hu_to_mu(hu.data, 60.0)), rig).values():
            torch.exp(-img)

    ideal = DetectorModel(Spectrum.from_tube(80.0, "Al:2.5"))
    fluoro = detector_preset("fluoro80")
    runs = {"mono60": mono,
            "poly80_ideal": lambda: render_polychromatic(hu, rig, ideal),
            "fluoro80": lambda: render_polychromatic(hu, rig, fluoro)}
    rows = []
    with torch.no_grad():
        for name, fn in runs.items():
            fn()
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            rows.append({"render": name, "seconds": float(np.median(times)), "bins": len(ideal.spectrum.energies_kev)
                         if name != "mono60" else 1, "threads": torch.get_num_threads()})
    df = pd.DataFrame(rows)
    df["ratio_to_mono"] = df.seconds / df.seconds[df.render == "mono60"].iloc[0]
    df["loadavg_1min"] = os.getloadavg()[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "benchmark_polychromatic.csv") as tmp:
        df.to_csv(tmp, index=False)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The whole calibration from images, in stages a user can call one by one::

    detections = detect(images, markers, nominal, options)            # balls, sub-pixel (corrected
                                                                       # through options.distortion)
    identified = identify(detections, markers, nominal, options)       # marker ids per view
    ids, uv = match_views(identified)
    f = fundamental(ids, uv, nominal, options)                         # F, every method; epipolar errors
    cal = dlt(identified, markers, nominal, options)                   # the rig, its residuals
    tri = triangulation(cal, identified, markers, ids, uv, options)    # errors, leave-one-out
    verdict = judge(cal, identified, f, markers, nominal, options)     # PASS or the reasons

:func:`calibrate_stereo` composes them; :func:`score_against_truth` compares a calibration with
the rig that really took the images and the exact ball centres (known in simulation), apart
from the fit. The knobs are one :class:`CalibrationOptions`.

Inputs are what a user has: one image per view, the phantom's marker table (the known 3D side
of the DLT, in the world frame the calibration will use) and a nominal rig (only the detector
sizes and a starting point for identifying the markers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._deprecation import legacy_options
from ..distortion import check_maps
from ..geometry import StereoRig, fundamental_from_cameras, rotation_angle_deg
from ..phantoms.io import marker_classes
from ..phantoms.symmetry import identification_ambiguities
from .detect import DetectOptions, detect_markers, fit_reach_px
from .dlt import RigCalibration, calibrate_rig, opencv_crosscheck
from .fundamental import METHODS as F_METHODS
from .fundamental import FundamentalEstimate, estimate_fundamental
from .identify import (
    MIN_MARGIN,
    Identification,
    IdentifyOptions,
    drop_overlapping,
    identify_markers,
    match_views,
    shadow_diameters_px,
)
from .triangulate import METHODS as TRI_METHODS
from .triangulate import Triangulation, error_table, triangulate
from .validate import EpipolarReport, compare_fundamental, validate_epipolar
from .verdict import PINHOLE_MISFIT_ADVISORY, Tolerances, Verdict, physics_checks, swap_message, view_assignment

if TYPE_CHECKING:
    from ..distortion import DistortionMap
    from ..imaging import DetectorModel
    from ..render.aperture import Aperture
    from .detect import ImageKind

#: Ball-sized blobs per phantom marker (plus 50) above which an image is refused before the
#: fits: a calibration shot shows its markers and a few look-alikes, a grid plate hundreds.
MAX_BLOBS_PER_MARKER = 10

__all__ = ["StereoCalibration", "CalibrationOptions", "calibrate_stereo", "check_images", "held_out_points",
           "detect", "correct_detections", "identify", "fundamental", "dlt", "triangulation", "judge", "score_against_truth",
           "FundamentalStage", "DltStage", "TriangulationStage"]


def check_images(images: Mapping[str, np.ndarray], rig: StereoRig) -> None:
    """Raise unless there is one 2D image per rig view (>= 2) with the view's detector size."""
    missing = [n for n in rig.names if n not in images]
    extra = [n for n in images if n not in rig.names]
    if missing or extra:
        raise ValueError(f"images: expected one image per rig view {rig.names}; missing {missing}, unknown {extra}")
    if len(images) < 2:
        raise ValueError(f"images: a stereo calibration needs at least 2 views, got {len(images)}")
    for n, img in images.items():
        shape = np.shape(img)
        cam = rig[n]
        if len(shape) != 2:
            raise ValueError(f"image {n!r}: expected a 2D (H, W) image, got shape {shape}")
        if shape != (cam.height, cam.width):
            raise ValueError(f"image {n!r}: {shape[1]}x{shape[0]} px (W x H) but the rig's view {n!r} has a "
                             f"{cam.width}x{cam.height} detector")


def held_out_points(markers: pd.DataFrame, rig: StereoRig, n: int = 300, seed: int = 0,
                    names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Correspondences never used by any estimate: ``n`` random 3D points in the markers'
    bounding box (grown by 10 %), projected by ``rig`` (kept where they fall on every detector)."""
    X = markers[["x", "y", "z"]].to_numpy(np.float64)
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.1 * (hi - lo)
    P = np.random.default_rng(seed).uniform(lo - pad, hi + pad, (n, 3))
    names = list(names or rig.names)
    uv = {k: rig[k].project(P)[0] for k in names}
    keep = np.all([rig[k].in_image(uv[k]) for k in names], axis=0)
    return {k: v[keep] for k, v in uv.items()}


@dataclass
class StereoCalibration:
    """Everything :func:`calibrate_stereo` found; :meth:`report` is the JSON-ready summary."""

    views: list[str]
    detections: dict[str, pd.DataFrame]
    identified: dict[str, Identification]
    ids: np.ndarray
    uv: dict[str, np.ndarray]
    fundamental: dict[str, FundamentalEstimate]
    epipolar: dict[str, EpipolarReport]
    heldout: dict[str, dict]
    best_method: str
    nominal_epipolar: EpipolarReport
    calibration: RigCalibration
    crosscheck: dict[str, dict]
    triangulations: dict[str, Triangulation]
    errors: pd.DataFrame
    loo_errors: pd.DataFrame
    sigma_px: float
    detection_errors_px: dict[str, np.ndarray] = field(default_factory=dict)
    truth_comparison: dict = field(default_factory=dict)
    seconds: float = 0.0
    physics: dict = field(default_factory=dict)
    assignment: dict = field(default_factory=dict)
    phantom_ambiguities: list = field(default_factory=list)
    verdict: Verdict = field(default_factory=lambda: Verdict(False, ["not evaluated"]))
    distortion: dict[str, DistortionMap] = field(default_factory=dict)

    @property
    def rig(self) -> StereoRig:
        return self.calibration.rig

    def report(self) -> dict:
        """JSON-ready summary (the keys of ``report.json``)."""
        e = self.errors
        rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
        out = {
            "verdict": "PASS" if self.verdict.passed else "NOT PASS",
            "verdict_reasons": self.verdict.reasons,
            "epipolar_error_px": self.epipolar[self.best_method].mean_symmetric_px,
            "epipolar_method": self.best_method,
            "epipolar_passed": self.epipolar[self.best_method].passed,
            "epipolar_threshold_px": self.epipolar[self.best_method].threshold_px,
            "nominal_rig_epipolar_error_px": self.nominal_epipolar.mean_symmetric_px,
            "reprojection_rms_px": self.calibration.rms_px,
            "triangulation_rms_mm": rms(e["error_mm"]),
            "triangulation_depth_rms_mm": rms(e["depth_mm"]),
            "triangulation_inplane_rms_mm": rms(e["inplane_mm"]),
            "predicted_depth_rms_mm": rms(e["predicted_depth_mm"]),
            "predicted_inplane_rms_mm": rms(e["predicted_inplane_mm"]),
            "triangulation_heldout_rms_mm": rms(self.loo_errors["error_mm"]),
            "triangulation_heldout_depth_rms_mm": rms(self.loo_errors["depth_mm"]),
            "crossing_line_mean_mm": float(e["crossing_mm"].mean()),
            "image_sigma_px": self.sigma_px,
            "markers_used": int(len(self.ids)),
            "seconds": self.seconds,
            "views": self.views,
            "detection": {
                n: {"detected": int(len(self.detections[n])), "identified": int(len(self.identified[n].table)),
                    "unmatched_detections": len(self.identified[n].unmatched),
                    "missing_markers": self.identified[n].missing,
                    "overlapping_markers": self.identified[n].overlapping,
                    "identification_margin": self.identified[n].margin,
                    "identification_ambiguous": self.identified[n].ambiguous,
                    "runner_up": (self.identified[n].hypotheses.iloc[1][["hypothesis", "matched", "evidence"]].to_dict()
                                  if len(self.identified[n].hypotheses) > 1 else None),
                    **({"rms_vs_truth_px": rms(self.detection_errors_px[n])} if n in self.detection_errors_px else {})}
                for n in self.views
            },
            "fundamental": {
                m: {"method_used": f.method_used, "note": f.note, "degeneracy": f.degeneracy,
                    "inliers": int(f.inliers.sum()), **self.epipolar[m].to_dict(), "heldout": self.heldout[m]}
                for m, f in self.fundamental.items()
            },
            "dlt": self.calibration.to_dict(),
            "opencv_crosscheck": self.crosscheck,
            "triangulation_methods": {
                m: {"rms_mm": rms(np.linalg.norm(t.points - self._truth_xyz(), axis=1)),
                    "reprojection_rms_px": rms(t.reprojection_px)}
                for m, t in self.triangulations.items()
            },
        }
        out["pinhole_misfit"] = self.pinhole_misfit()
        out["advisories"] = self.advisories()
        out["physics_vs_nominal"] = self.physics
        out["view_assignment"] = self.assignment
        out["phantom_ambiguities"] = self.phantom_ambiguities
        if self.truth_comparison:
            out["calibrated_vs_truth"] = self.truth_comparison
        return out

    def pinhole_misfit(self) -> dict[str, float]:
        """Per view, the DLT's reprojection RMS (per axis) over the median standard error of the
        detected centres (``sigma_u, sigma_v`` of the ball fits; NaN without them): how far a
        pinhole camera is from explaining the centres to their own precision (module
        :mod:`stereodrr.calib.verdict`, :data:`~stereodrr.calib.verdict.PINHOLE_MISFIT_ADVISORY`)."""
        out = {}
        for n in self.views:
            d = self.detections[n]
            sigma = float(np.nanmedian(np.r_[d["sigma_u"], d["sigma_v"]])) if "sigma_u" in d and len(d) else np.nan
            rms = float(np.sqrt(np.mean(np.square(self.calibration.views[n].errors_px))))
            out[n] = rms / sigma if sigma > 0 else float("nan")
        return out

    def advisories(self) -> list[str]:
        """What the numbers suggest checking, whatever the verdict."""
        high = {n: r for n, r in self.pinhole_misfit().items() if r > PINHOLE_MISFIT_ADVISORY}
        if not high:
            return []
        return [f"the DLT leaves residuals {', '.join(f'{n} {r:.0f}x' for n, r in high.items())} the detected "
                "centres' precision: a pinhole camera does not explain these images. Image-intensifier distortion "
                "not corrected (give --distortion maps), or markers not where the phantom file puts them; "
                "triangulation may be worse than the epipolar error suggests"]

    def _truth_xyz(self) -> np.ndarray:
        return self.errors[["x", "y", "z"]].to_numpy()

    def summary(self) -> str:
        """A plain-text table of the main numbers."""
        r = self.report()
        lines = ["F estimation (mean symmetric epipolar error on the markers | on held-out points):"]
        for m, f in r["fundamental"].items():
            used = f["method_used"] + (" *" if f["method_used"] != m else "")
            lines.append(f"  {m:9s} ran {used:10s} inliers {f['inliers']:3d}  {f['mean_symmetric_px']:.4f} px | "
                         f"{f['heldout']['mean_symmetric_px_est']:.4f} px" + ("  " + f["note"] if f["note"] else ""))
        ep = self.epipolar[self.best_method]
        lines += [
            f"epipolar validation ({self.best_method}): {ep.summary()}",
            f"nominal rig (uncalibrated) epipolar error: {r['nominal_rig_epipolar_error_px']:.3f} px",
            f"DLT reprojection RMS: {r['reprojection_rms_px']:.4f} px ("
            + ", ".join(f"{n} {v['rms_px']:.4f}" for n, v in r["dlt"]["views"].items()) + ")",
            f"triangulation RMS ({len(self.ids)} markers, N-view): {r['triangulation_rms_mm']:.4f} mm "
            f"(depth {r['triangulation_depth_rms_mm']:.4f}, in-plane {r['triangulation_inplane_rms_mm']:.4f}; "
            f"predicted depth {r['predicted_depth_rms_mm']:.4f} for {self.sigma_px:.3f} px)",
            f"triangulation RMS, leave-one-marker-out calibration: {r['triangulation_heldout_rms_mm']:.4f} mm",
            f"crossing-line distance mean: {r['crossing_line_mean_mm']:.4f} mm",
            "DLT residual / detection precision: " + ", ".join(f"{n} {v:.1f}" for n, v in r["pinhole_misfit"].items()),
            *(f"ADVISORY: {a}" for a in r["advisories"]),
        ]
        if self.detection_errors_px:
            lines.append("detection RMS vs exact projected centres: " + ", ".join(
                f"{n} {v['rms_vs_truth_px']:.4f} px" for n, v in r["detection"].items() if "rms_vs_truth_px" in v))
        if self.truth_comparison:
            lines.append("calibrated vs true rig: " + ", ".join(
                f"{n}: source {v['source_error_mm']:.3f} mm, rotation {v['rotation_error_deg']:.4f} deg"
                for n, v in self.truth_comparison.items()))
        lines.append("identification margin (evidence of the labelling minus the runner-up's, markers): " + ", ".join(
            f"{n} {self.identified[n].margin:.1f}" for n in self.views))
        lines.append("calibrated vs nominal rig: " + "; ".join(
            f"{n}: source {p['source_mm']['deviation']:.1f} mm, principal ray {p['principal_ray_deg']['deviation']:.2f} deg, "
            f"SDD {p['values']['sdd_mm']:.1f} mm, magnification {p['values']['magnification']:.4f}"
            for n, p in self.physics.items()))
        lines.append(self.verdict.text())
        return "\n".join(lines)


@dataclass(frozen=True)
class CalibrationOptions:
    """The knobs of :func:`calibrate_stereo` and its stages.

    Attributes:
        kind: image kind for detection (``"auto"``, ``"line_integral"``, ``"intensity"``).
        epipolar_threshold_px: the validation passes below this mean symmetric error.
        f_threshold_px: inlier threshold of the robust F methods.
        methods: F methods to run (keys of :data:`stereodrr.calib.fundamental.METHODS`).
        shared_intrinsics: one K for all views in the DLT refinement.
        seed: seed of the robust estimators and the held-out points.
        tolerances: how far the calibrated rig may be from the nominal one for a PASS
            (:class:`stereodrr.calib.verdict.Tolerances`).
        min_margin: identification evidence margin (markers) needed for a PASS.
        aperture: the detector's pixel sampling the ball fit models (``"area"``: flat panels
            and stereodrr's default renderer; ``"point"``: images sampled at pixel centres).
        detector: the imaging chain that made ``-log(I / I_open)`` images (polychromatic, e.g.
            ``detector_preset("fluoro80")``): its scatter model is removed from each image
            (:func:`stereodrr.imaging.remove_scatter`, with the nominal camera) and the balls are
            fitted with the beam's own steel transmission curve
            (:func:`stereodrr.imaging.ball_transmission`). ``None``: one energy, ``exp(-a)``.
        distortion: per view, the image intensifier's measured distortion map
            (:func:`stereodrr.distortion.fit_distortion`): each detected centre is corrected
            through it before identification, so the rest of the calibration sees a pinhole camera
            (``None`` or a view left out: its images are taken as undistorted).
        progress: show tqdm bars.
    """

    kind: ImageKind = "auto"
    epipolar_threshold_px: float = 1.0
    f_threshold_px: float = 1.0
    methods: tuple[str, ...] = tuple(F_METHODS)
    shared_intrinsics: bool = False
    seed: int = 0
    tolerances: Tolerances = field(default_factory=Tolerances)
    min_margin: float = MIN_MARGIN
    aperture: Aperture = "area"
    detector: DetectorModel | None = None
    distortion: Mapping[str, DistortionMap] | None = None
    progress: bool = True

    def with_(self, **changes: Any) -> CalibrationOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _expected_diameters_px(markers: pd.DataFrame, rig: StereoRig) -> tuple[float, float]:
    X = markers[["x", "y", "z"]].to_numpy(np.float64)
    d = markers["diameter_mm"].to_numpy(np.float64) if "diameter_mm" in markers else np.full(len(X), 2.0)
    sizes = np.concatenate([shadow_diameters_px(cam, X, d) for cam in rig.cameras.values()])
    return 0.6 * float(sizes.min()), 1.4 * float(sizes.max())


# ---- the stages
def detect(images: Mapping[str, np.ndarray], markers: pd.DataFrame, nominal: StereoRig,
           options: CalibrationOptions | None = None) -> dict[str, pd.DataFrame]:
    """Stage 1: the balls of every view (:func:`detect_markers`), sized by the shadows the
    nominal rig predicts; with ``options.detector`` its scatter removed and its beam's curve fitted."""
    o = options or CalibrationOptions()
    check_images(images, nominal)
    check_maps(o.distortion, nominal)
    dmin, dmax = _expected_diameters_px(markers, nominal)
    transmission = None
    if o.detector is not None:
        from ..imaging import ball_transmission, remove_scatter

        if o.kind == "intensity":
            raise ValueError("detector: expects -log(I / I_open) images (kind 'line_integral' or 'auto'), "
                             "not raw intensities")
        images = {n: remove_scatter(np.asarray(images[n], np.float64), o.detector, nominal[n]) for n in nominal.names}
        transmission = ball_transmission(o.detector)
    detections = {}
    # A loop, not a comprehension: the bar ends its line before a detection's error is printed.
    for n in tqdm(nominal.names, desc="detect", disable=not o.progress):
        K = nominal[n].K  # non-square pixels make each ball's shadow an ellipse: the fit models it
        detections[n] = detect_markers(images[n], kind=o.kind, diameter_px=(dmin, dmax), aperture=o.aperture,
                                       options=DetectOptions(pixel_aspect=float(K[0, 0] / K[1, 1]),
                                                             max_blobs=MAX_BLOBS_PER_MARKER * len(markers) + 50),
                                       name=f"image {n!r}", transmission=transmission)
    return correct_detections(detections, o.distortion, nominal)


def correct_detections(detections: Mapping[str, pd.DataFrame], maps: Mapping[str, DistortionMap] | None,
                       nominal: StereoRig) -> dict[str, pd.DataFrame]:
    """Stage 1b: each view's detected centres through its distortion map (recorded -> ideal
    pixels); the recorded centres are kept as ``u_recorded, v_recorded``. Views without a map
    are returned as they are.

    Raises:
        ValueError: a map for a view the rig does not have, or for another image size.
    """
    check_maps(maps, nominal)
    out = dict(detections)
    for n, m in (maps or {}).items():
        det = detections[n].copy()
        uv = det[["u", "v"]].to_numpy(np.float64)
        det["u_recorded"], det["v_recorded"] = uv[:, 0], uv[:, 1]
        if len(uv):
            ideal = np.asarray(m.undistort_points(uv), dtype=np.float64)
            det["u"], det["v"] = ideal[:, 0], ideal[:, 1]
        out[n] = det
    return out


def identify(detections: Mapping[str, pd.DataFrame], markers: pd.DataFrame, nominal: StereoRig,
             options: CalibrationOptions | None = None) -> dict[str, Identification]:
    """Stage 2: the phantom marker of every detection (:func:`identify_markers`), overlapping
    shadows dropped. When a view fails, says whether the images look out of order."""
    o = options or CalibrationOptions()
    identified, failed = {}, {}
    for n in nominal.names:
        det = detections[n]
        # Shadows within the ball fit's reach of each other are dropped: the reach grows with the blur.
        blur = det["blur_px"].to_numpy(np.float64) if "blur_px" in det else np.array([])
        gap = fit_reach_px(float(np.nanmedian(blur)) if np.isfinite(blur).any() else 0.0)
        try:
            identified[n] = drop_overlapping(identify_markers(det[["u", "v"]].to_numpy(), markers, nominal[n],
                                                              det["diameter_px"].to_numpy(),
                                                              IdentifyOptions(min_margin=o.min_margin), name=n),
                                             markers, nominal[n], gap)
        except ValueError as e:
            failed[n] = e
    if failed:
        _raise_out_of_order(failed, detections, markers, nominal, o.min_margin)
    return identified


def _raise_out_of_order(failed: dict[str, ValueError], detections: Mapping[str, pd.DataFrame], markers: pd.DataFrame,
                        nominal: StereoRig, min_margin: float) -> None:
    """Images out of order: does each failed image fit another nominal view? Raises either way."""
    fits = {}
    for n in failed:
        for m in nominal.names:
            if m == n:
                continue
            try:
                det = detections[n]
                identify_markers(det[["u", "v"]].to_numpy(), markers, nominal[m], det["diameter_px"].to_numpy(),
                                 IdentifyOptions(max_search_deg=5.0, min_margin=min_margin), name=m)
                fits[n] = m
                break
            except ValueError:
                pass
    if fits:
        raise ValueError("the images look out of order: " + "; ".join(
            f"the image given for view {n!r} fits the nominal view {m!r}" for n, m in fits.items())
            + "; give --images in the rig's view order " + str(nominal.names))
    raise next(iter(failed.values()))


@dataclass
class FundamentalStage:
    """Stage 3's results: every method's F and epipolar report, the best method, the nominal
    rig's epipolar report, and each F against the calibrated rig's on held-out points."""

    fundamental: dict[str, FundamentalEstimate]
    epipolar: dict[str, EpipolarReport]
    best_method: str
    nominal_epipolar: EpipolarReport
    heldout: dict[str, dict] = field(default_factory=dict)


def fundamental(ids: np.ndarray, uv: Mapping[str, np.ndarray], nominal: StereoRig,
                options: CalibrationOptions | None = None) -> FundamentalStage:
    """Stage 3: F of the first two views with every method, validated by the epipolar error of
    the markers (the best method has the smallest)."""
    o = options or CalibrationOptions()
    a, b = nominal.names[0], nominal.names[1]
    fund, epipolar = {}, {}
    for m in o.methods:
        est = estimate_fundamental(uv[a], uv[b], method=m, threshold_px=o.f_threshold_px, seed=o.seed)
        fund[m] = est
        epipolar[m] = validate_epipolar(est.F, uv[a], uv[b], o.epipolar_threshold_px, ids=ids)
    best = min(o.methods, key=lambda m: epipolar[m].mean_symmetric_px)
    nominal_epipolar = validate_epipolar(fundamental_from_cameras(nominal[a], nominal[b]), uv[a], uv[b],
                                         o.epipolar_threshold_px, ids=ids)
    return FundamentalStage(fund, epipolar, best, nominal_epipolar)


def heldout_comparison(stage: FundamentalStage, markers: pd.DataFrame, reference: StereoRig, names: Sequence[str],
                       seed: int = 0) -> dict[str, dict]:
    """Each method's F against the analytic F of ``reference`` on points no estimate used."""
    a, b = names[0], names[1]
    held = held_out_points(markers, reference, seed=seed, names=[a, b])
    F_ref = fundamental_from_cameras(reference[a], reference[b])
    return {m: compare_fundamental(f.F, F_ref, held[a], held[b]) for m, f in stage.fundamental.items()}


@dataclass
class DltStage:
    """Stage 4's results: the calibration, OpenCV's cross-check per view, the 3D-2D
    correspondences per view and the image error per coordinate the residuals imply."""

    calibration: RigCalibration
    crosscheck: dict[str, dict]
    correspondences: dict[str, tuple[np.ndarray, np.ndarray]]
    sigma_px: float


def dlt(identified: Mapping[str, Identification], markers: pd.DataFrame, nominal: StereoRig,
        options: CalibrationOptions | None = None) -> DltStage:
    """Stage 4: every view's camera by the DLT of its identified markers, refined jointly."""
    o = options or CalibrationOptions()
    table = markers.set_index("marker_id")
    corr = {}
    for n in nominal.names:
        t = identified[n].table
        corr[n] = (table.loc[t["marker_id"], ["x", "y", "z"]].to_numpy(np.float64), t[["u", "v"]].to_numpy())
    try:
        calibration = calibrate_rig(corr, nominal.cameras, shared_intrinsics=o.shared_intrinsics)
    except ValueError as exc:
        labelled = ", ".join(f"{n} {len(identified[n].table)} of {len(identified[n].table) + len(identified[n].unmatched)}"
                             for n in nominal.names)
        raise ValueError(f"calibration: {exc}; the balls labelled per view (of those detected: {labelled}) are likely "
                         "mislabelled: check the nominal rig (SDD, pixel size, angles) and the phantom") from None
    crosscheck = {n: opencv_crosscheck(calibration.rig[n], *corr[n]) for n in nominal.names}
    # Image error per coordinate from the DLT residuals (2N residuals, 10 parameters per view).
    n_res = sum(2 * len(c[1]) for c in corr.values())
    n_par = 10 * len(nominal.names)
    sigma = float(np.sqrt(sum(np.sum(v.errors_px**2) for v in calibration.views.values()) / max(n_res - n_par, 1)))
    return DltStage(calibration, crosscheck, corr, sigma)


@dataclass
class TriangulationStage:
    """Stage 5's results: every triangulation method's points, the N-view errors per marker and
    the leave-one-marker-out errors."""

    triangulations: dict[str, Triangulation]
    errors: pd.DataFrame
    loo_errors: pd.DataFrame


def triangulation(stage: DltStage, identified: Mapping[str, Identification], X: np.ndarray, ids: np.ndarray,
                  uv: Mapping[str, np.ndarray], nominal: StereoRig, options: CalibrationOptions | None = None
                  ) -> TriangulationStage:
    """Stage 5: the markers seen in every view triangulated (``X`` ``(K, 3)`` their phantom
    coordinates, in ``ids`` order) with every method, and each again by a calibration without it."""
    o = options or CalibrationOptions()
    names = nominal.names
    rig = stage.calibration.rig
    tri = {m: triangulate(rig.cameras, {n: uv[n] for n in (names if m == "nview" else names[:2])}, m)
           for m in TRI_METHODS}
    errors = error_table(tri["nview"], X, rig.cameras, ids=ids, sigma_px=stage.sigma_px)
    errors[["x", "y", "z"]] = X
    loo = []
    for k, mid in enumerate(tqdm(ids, desc="leave-one-out", disable=not o.progress)):
        sub = {}
        for n in names:
            keep = identified[n].table["marker_id"].to_numpy() != mid
            sub[n] = (stage.correspondences[n][0][keep], stage.correspondences[n][1][keep])
        cal_k = calibrate_rig(sub, nominal.cameras, shared_intrinsics=o.shared_intrinsics)
        tri_k = triangulate(cal_k.rig.cameras, {n: uv[n][k:k + 1] for n in names}, "nview")
        loo.append(error_table(tri_k, X[k:k + 1], cal_k.rig.cameras, ids=[mid]))
    return TriangulationStage(tri, errors, pd.concat(loo, ignore_index=True))


def judge(rig: StereoRig, identified: Mapping[str, Identification], epipolar: EpipolarReport, markers: pd.DataFrame,
          nominal: StereoRig, options: CalibrationOptions | None = None) -> tuple[Verdict, dict, dict, list]:
    """Stage 6: the verdict (PASS needs every check of :mod:`stereodrr.calib.verdict`), with the
    physics checks per view, the view assignment and the phantom's ambiguities it rests on."""
    o = options or CalibrationOptions()
    physics = {n: physics_checks(rig[n], nominal[n], nominal.isocenter, o.tolerances) for n in nominal.names}
    assignment = view_assignment(rig, nominal)
    ambiguities = identification_ambiguities(markers[["x", "y", "z"]].to_numpy(np.float64), marker_classes(markers),
                                              markers["marker_id"].tolist()) if len(markers) >= 4 else []
    reasons = []
    if not epipolar.passed:
        reasons.append(f"epipolar error {epipolar.mean_symmetric_px:.3f} px >= {epipolar.threshold_px:g} px: recalibrate")
    reasons += [f"phantom: {a}" for a in ambiguities]
    for n in nominal.names:
        idf = identified[n]
        if idf.ambiguous:
            ru = idf.hypotheses.iloc[1]
            reasons.append(f"view {n!r}: the marker labelling is ambiguous: margin {idf.margin:.1f} < {idf.min_margin:g} "
                           f"markers over the runner-up ({ru['hypothesis']}: {int(ru['matched'])} matched)")
    most = max(len(identified[n].table) for n in nominal.names)
    for n in nominal.names:
        if len(identified[n].table) < 0.5 * most:  # the views see the same phantom: one labelled far fewer
            reasons.append(f"view {n!r}: {len(identified[n].table)} balls labelled against {most} in another view "
                           "(wrong nominal rig or phantom?)")
    if assignment["reordered"]:
        reasons.append(swap_message(assignment))
    for n, p in physics.items():
        bad = [k for k, v in p.items() if k != "values" and not v["ok"]]
        if bad:
            reasons.append(f"view {n!r}: calibrated rig differs from the nominal rig beyond tolerance: " + ", ".join(
                f"{k} {p[k]['deviation']:.3g} > {p[k]['tolerance']:g}" for k in bad)
                + " (wrong nominal rig, wrong phantom scale, or a wrong labelling?)")
    return Verdict(not reasons, reasons), physics, assignment, ambiguities


def calibrate_stereo(images: Mapping[str, np.ndarray], markers: pd.DataFrame, nominal: StereoRig,
                     options: CalibrationOptions | None = None, *, truth: StereoRig | None = None,
                     truth_centres_px: Mapping[str, np.ndarray] | None = None, **legacy: Any) -> StereoCalibration:
    """Calibrate a stereo rig from images of a marker phantom: the stages in order.

    Args:
        images: view name -> ``(H, W)`` image (one per view of ``nominal``).
        markers: the phantom's marker table (``marker_id, x, y, z, diameter_mm`` in world mm).
        nominal: the nominal rig (detector sizes; starting point of the identification only).
        options: the knobs (:class:`CalibrationOptions`).
        truth, truth_centres_px: the rig that took the images and the exact projected centres
            (simulation): :func:`score_against_truth` after the calibration.
        legacy: :class:`CalibrationOptions` fields as keywords (the former signature), accepted
            for one release with a ``DeprecationWarning``.

    Raises:
        ValueError: images missing, of the wrong size or not 2D; no markers found; markers not
            identifiable; too few for F (8) or DLT (6) points; degenerate geometry.
    """
    t0 = time.perf_counter()
    o = _options(options, legacy)
    names = nominal.names
    detections = detect(images, markers, nominal, o)
    identified = identify(detections, markers, nominal, o)
    ids, uv = match_views(identified)
    if len(ids) < 8:
        raise ValueError(
            f"only {len(ids)} marker(s) were identified in every view (at least 8 needed: "
            + ", ".join(f"{n} {len(identified[n].table)}" for n in names)
            + "); check the phantom file (is it the phantom imaged?), the image order and orientation (mirrored?)")
    f = fundamental(ids, uv, nominal, o)
    cal = dlt(identified, markers, nominal, o)
    f.heldout = heldout_comparison(f, markers, cal.calibration.rig, names, o.seed)
    X = markers.set_index("marker_id").loc[ids, ["x", "y", "z"]].to_numpy(np.float64)
    tri = triangulation(cal, identified, X, ids, uv, nominal, o)
    verdict, physics, assignment, ambiguities = judge(cal.calibration.rig, identified, f.epipolar[f.best_method],
                                                      markers, nominal, o)
    result = StereoCalibration(
        physics=physics, assignment=assignment, phantom_ambiguities=ambiguities, verdict=verdict,
        views=names, detections=detections, identified=identified, ids=ids, uv=uv, fundamental=f.fundamental,
        epipolar=f.epipolar, heldout=f.heldout, best_method=f.best_method, nominal_epipolar=f.nominal_epipolar,
        calibration=cal.calibration, crosscheck=cal.crosscheck, triangulations=tri.triangulations, errors=tri.errors,
        loo_errors=tri.loo_errors, sigma_px=cal.sigma_px, distortion=dict(o.distortion or {}))
    if truth is not None or truth_centres_px is not None:
        score_against_truth(result, markers, truth, truth_centres_px, o.seed)
    result.seconds = time.perf_counter() - t0
    return result


def _options(options: CalibrationOptions | None, legacy: Mapping[str, Any]) -> CalibrationOptions:
    """The options the former keywords describe (a list of methods, and the former ``None``
    defaults of ``tolerances`` and ``min_margin``, normalised)."""
    kw = dict(legacy)
    if "methods" in kw:
        kw["methods"] = tuple(kw["methods"])
    for k in ("tolerances", "min_margin"):
        if k in kw and kw[k] is None:
            kw[k] = getattr(options or CalibrationOptions(), k)
    return legacy_options("calibrate_stereo", options, kw, CalibrationOptions, stacklevel=4)


def score_against_truth(result: StereoCalibration, markers: pd.DataFrame, truth: StereoRig | None = None,
                        truth_centres_px: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> StereoCalibration:
    """Ground truth (simulation), apart from the fit: each F against the true rig's on held-out
    points, the calibrated cameras against the true ones, the detections against the exact
    projected centres (``truth_centres_px``: view -> ``(M, 2)`` in marker-table order). Fills
    ``result``'s ``heldout``, ``truth_comparison`` and ``detection_errors_px`` and returns it."""
    names = result.views
    if truth is not None:
        stage = FundamentalStage(result.fundamental, result.epipolar, result.best_method, result.nominal_epipolar)
        result.heldout = heldout_comparison(stage, markers, truth, names, seed)
        for n in names:
            c, tr = result.calibration.rig[n], truth[n]
            result.truth_comparison[n] = {
                "source_error_mm": float(np.linalg.norm(c.center - tr.center)),
                "rotation_error_deg": rotation_angle_deg(c.R, tr.R),
                "focal_rel_error": float(np.max(np.abs(np.diag(c.K)[:2] / np.diag(tr.K)[:2] - 1))),
                "principal_point_error_px": float(np.linalg.norm(c.K[:2, 2] - tr.K[:2, 2])),
            }
    if truth_centres_px is not None:
        order = {mid: i for i, mid in enumerate(markers["marker_id"].to_numpy())}
        for n in names:
            t = result.identified[n].table
            exact = np.asarray(truth_centres_px[n])[[order[m] for m in t["marker_id"]]]
            result.detection_errors_px[n] = np.linalg.norm(t[["u", "v"]].to_numpy() - exact, axis=1)
    return result

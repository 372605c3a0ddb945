"""A bone's pose in a frame without any start: a global search over orientations, then registration.

1. **Orientations**: ``n`` rotations spread evenly over SO(3) (:func:`so3_grid`, a
   super-Fibonacci spiral of unit quaternions, Alexa 2022).
2. **Templates**: for each rotation, the DRR of every view with the bone's support centre at the
   rig's isocenter, rendered at ``1/scale`` of the detector resolution through cameras cropped to
   a window around the isocenter's projection (exact geometry, :func:`~stereodrr.geometry.crop_camera`).
3. **2D positions**: per view, the NCC of the template's window against the frame at every shift
   that keeps the window on the frame (``cv2.matchTemplate``, FFT-based for large windows; when
   that finds nothing, again with the frame padded with zeros by half a window, as outside the
   intensifier's field, so that a bone that leaves the field is found). The whole window counts, the bone and
   the empty space around it: a match over the bone's own pixels only would compare a different
   set of pixels at every shift and favour flat regions. Both the frame and the template are
   high-passed first (minus a Gaussian blur of ``highpass_mm`` at the isocenter), so that the
   soft tissue's slow variation, which a bone-only CT lacks, does not decide the match. A shift
   moves the projected support centre by the same number of pixels (the template's change of
   perspective over the shift is ignored here and left to the registration).
4. **3D position**: the best ``peaks`` shifts of the first view, each paired with the best shift of
   the second view within ``band_px`` of its epipolar line, and the other way round; each pair
   triangulated, and scored as the mean over every view (a third one too) of the NCC at the
   point's projection.
5. **Refinement**: the best ``refine`` candidates that differ by more than ``distinct_deg`` /
   ``distinct_mm`` are registered (the caller's registration), the lowest loss wins (losses
   judged on each pose's own region, :func:`~stereodrr.track.bone_fit.frame_loss`). It is
   reported as ``"ambiguous"`` (no pose) when another refined candidate that ends elsewhere has a
   loss within ``ambiguity`` of it: two different poses explain the frame about equally well.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..calib.triangulate import triangulate_linear
from ..geometry import (
    RigidPose,
    StereoRig,
    fundamental_from_projections,
    moved_extrinsics,
    pose_matrix,
    quaternion_to_matrix,
    rotation_angle_deg,
)
from ..registration import Level, auto_volume_factor, pixel_footprint_mm, scale_intrinsics
from ..render.drr import drr
from ..render.projector import Mode, Projector
from ..volume import Volume
from .bone_views import support_corners

__all__ = ["InitOptions", "InitResult", "Candidate", "so3_grid", "template_candidates", "initial_pose"]


@dataclass(frozen=True)
class InitOptions:
    """The global search (module docstring).

    Attributes:
        rotations: orientations sampled over SO(3) (1500: neighbours about 20 deg apart).
        scale: detector binning of the template search.
        highpass_mm: Gaussian sigma (mm at the isocenter) of the blur subtracted before matching.
        peaks: shifts per view and rotation paired with the other view.
        band_px: half-width of the epipolar band, in binned pixels.
        refine: candidates refined by registration.
        distinct_deg, distinct_mm: candidates (and refined poses) closer than both are the same.
        ambiguity: the best refined loss must be lower than every distinct runner-up's by this much.
        first_level: a coarse pyramid level run before the tracking levels when refining a
            candidate (it starts up to half the orientation spacing away); None for none.
    """

    rotations: int = 1500
    scale: int = 8
    highpass_mm: float = 4.0
    peaks: int = 3
    band_px: float = 1.5
    refine: int = 10
    distinct_deg: float = 15.0
    distinct_mm: float = 5.0
    ambiguity: float = 0.1
    first_level: Level | None = Level(8, 20, volume_factor=1, optimizer="lbfgs")

    def __post_init__(self) -> None:
        for name in ("rotations", "scale", "peaks", "refine"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"init {name}: expected a positive integer, got {v}")
        for name in ("highpass_mm", "band_px", "distinct_deg", "distinct_mm"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"init {name}: expected a positive number, got {v}")
        if not (math.isfinite(self.ambiguity) and self.ambiguity >= 0):
            raise ValueError(f"init ambiguity: expected a non-negative loss margin, got {self.ambiguity}")


@dataclass(frozen=True)
class Candidate:
    """One template-search hypothesis: the bone rotated by ``rotation`` with its support centre
    at ``position`` (world mm); ``score`` the mean NCC over views, ``view_scores`` per view."""

    rotation: np.ndarray
    position: np.ndarray
    score: float
    view_scores: tuple[float, ...]


InitStatus = Literal["found", "ambiguous", "failed"]


@dataclass
class InitResult:
    """The first-frame search's outcome.

    Attributes:
        pose: the chosen pose, None unless ``status == "found"``.
        status: ``"found"``, ``"ambiguous"`` (two distinct poses fit about equally well) or
            ``"failed"`` (no candidate, or none that registered).
        message: one line for a person.
        loss: the chosen (or best, when ambiguous) refined loss; NaN without one.
        margin: the runner-up's refined loss minus the best's (inf without a distinct runner-up).
        candidates: one row per refined candidate: template ``score``, refined ``loss``,
            ``status``, and the refined pose's rotation vector (deg) and translation (mm).
        seconds: wall time of the search and of the refinement.
    """

    pose: RigidPose | None
    status: InitStatus
    message: str
    loss: float
    margin: float
    candidates: pd.DataFrame
    seconds: dict[str, float]


def so3_grid(n: int) -> np.ndarray:
    """``(n, 3, 3)`` rotations spread evenly over SO(3): the super-Fibonacci spiral (Alexa,
    "Super-Fibonacci Spirals: Fast, Low-Discrepancy Sampling of SO(3)", CVPR 2022), deterministic."""
    if int(n) != n or n < 1:
        raise ValueError(f"n: expected a positive number of rotations, got {n}")
    phi, psi = math.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n) + 0.5
    t = s / n
    r, rc = np.sqrt(t), np.sqrt(1.0 - t)
    a, b = 2 * np.pi * s / phi, 2 * np.pi * s / psi
    q = np.stack([rc * np.cos(b), r * np.sin(a), r * np.cos(a), rc * np.sin(b)], 1)  # (w, x, y, z)
    return quaternion_to_matrix(q)


def _binned(image: np.ndarray, scale: int) -> np.ndarray:
    """Mean over ``scale x scale`` blocks (a partial last block dropped), as the registration bins."""
    h, w = (image.shape[0] // scale) * scale, (image.shape[1] // scale) * scale
    return image[:h, :w].reshape(h // scale, scale, w // scale, scale).mean((1, 3))


def _highpass(image: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """``image`` minus its Gaussian blur normalised by the weights (no bleeding across the mask's
    edge), zero where the weight is zero."""
    blur = cv2.GaussianBlur(image * weight, (0, 0), sigma_px)
    norm = cv2.GaussianBlur(weight, (0, 0), sigma_px)
    out = np.where(weight > 0, image - blur / np.maximum(norm, 1e-6), 0.0)
    return out.astype(np.float32)


def _peaks(score: np.ndarray, k: int, radius: int) -> list[tuple[int, int]]:
    """The ``k`` best (row, col) of a map, each at least ``radius`` from the ones before."""
    s = score.copy()
    out = []
    for _ in range(k):
        r, c = np.unravel_index(int(np.argmax(s)), s.shape)
        if not np.isfinite(s[r, c]) or s[r, c] <= -1:
            break
        out.append((int(r), int(c)))
        s[max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1] = -np.inf
    return out


def template_candidates(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray],
                        masks: Mapping[str, np.ndarray] | None, options: InitOptions = InitOptions(),
                        progress: bool = True, render_mode: Mode = "joseph", pad: bool = False) -> list[Candidate]:
    """Steps 1-4 of the module docstring: candidates sorted by score, best first.

    Args:
        volume: the bone's CT (attenuation-like values, 0 outside the bone).
        rig: at least two views.
        images, masks: per view ``(H, W)`` line-integral-like frame (bone bright) and weights.
        options: the search's settings.
        pad: pad each frame by half a template window (zeros, as outside the intensifier's
            field), so that the support centre can lie anywhere on the frame, not only where the
            whole window fits inside it: a bone that leaves the field (a femur in a knee trial),
            or whose window is larger than the frame, is found only so. Off by default: the
            freedom also admits partial matches at the frame's edges (on the wrist sample, two
            poses then fit about equally well); :func:`initial_pose` pads only when the search
            without it finds nothing.
    """
    if len(rig) < 2:
        raise ValueError(f"rig: the global search triangulates the bone from two views or more, got {len(rig)}")
    s = options.scale
    names = rig.names
    corners = support_corners(volume)
    centre = corners.mean(0)
    radius_mm = 0.5 * float(np.linalg.norm(corners.max(0) - corners.min(0)))
    p0 = np.asarray(rig.isocenter, dtype=np.float64)
    foot = pixel_footprint_mm(rig, s)
    sigma = options.highpass_mm / foot
    size = _template_size(rig, p0, radius_mm, s, sigma)
    margin = (size - 1) // 2 if pad else 0
    targets = [cv2.copyMakeBorder(t, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=0.0)
               for t in _binned_targets(images, masks, names, s, sigma)]
    K, R, t = rig.to_torch(volume.device, torch.float64)
    Kb = scale_intrinsics(K, s)
    uv0 = np.array([(rig[n].project(p0[None])[0][0] + 0.5) / s - 0.5 for n in names])  # binned
    tl = np.round(uv0 - (size - 1) / 2).astype(int)
    Kc = Kb.clone()
    Kc[:, 0, 2] -= torch.as_tensor(tl[:, 0], dtype=Kc.dtype, device=Kc.device)
    Kc[:, 1, 2] -= torch.as_tensor(tl[:, 1], dtype=Kc.dtype, device=Kc.device)
    off = uv0 - tl - margin  # the support centre's place in a template (binned px), less the targets' padding
    vol = volume.downsample(auto_volume_factor(volume, rig, s))
    dt = vol.data.dtype
    ifw = vol.index_from_world_tensor()
    rotations = so3_grid(options.rotations)
    P = [rig[n].P for n in names]
    F = {(a, b): fundamental_from_projections(P[a], P[b]) for a, b in ((0, 1), (1, 0))}
    A = np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1.0]])  # binned -> full pixels
    cands: list[Candidate] = []
    batch = 32
    V = len(names)
    bar = tqdm(total=len(rotations), disable=not progress, desc="orientations", unit="rot", leave=False)
    try:
        for b0 in range(0, len(rotations), batch):
            Rb = torch.as_tensor(rotations[b0:b0 + batch], device=R.device)  # the poses on the cameras' device
            nb = len(Rb)
            # Support centre c -> p0: x' = R (x - c) + p0, as a pose about the volume centre.
            T = pose_matrix(Rb, torch.as_tensor(p0 - centre, device=R.device).expand(nb, 3),
                            torch.as_tensor(centre, device=R.device).expand(nb, 3))
            Rm, tm = moved_extrinsics(R, t, T[:, None])
            with torch.no_grad():
                tmpl = drr(vol.data, ifw, Kc.repeat(nb, 1, 1).to(dt), Rm.reshape(-1, 3, 3).to(dt),
                           tm.reshape(-1, 3).to(dt), size, size, Projector(render_mode))
            shown = tmpl.reshape(nb, V, size, size).double().cpu().numpy()
            for j in range(nb):
                cands += _rotation_candidates(rotations[b0 + j], shown[j], targets, off, sigma, P, F, A, options)
            bar.update(nb)
    finally:
        bar.close()
    cands.sort(key=lambda c: -c.score)
    return cands


def _binned_targets(images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None, names: Sequence[str],
                    s: int, sigma: float) -> list[np.ndarray]:
    """Each view's frame binned by ``s`` and high-passed (0 where a binned pixel is not wholly
    under the mask)."""
    targets = []
    for n in names:
        img = np.asarray(images[n], dtype=np.float32)
        m = np.ones_like(img) if masks is None else (np.asarray(masks[n]) > 0).astype(np.float32)
        mb = (_binned(m, s) > 1 - 1e-6).astype(np.float32)
        targets.append(_highpass(_binned(img, s).astype(np.float32), mb, sigma))
    return targets


def _template_size(rig: StereoRig, p0: np.ndarray, radius_mm: float, s: int, sigma: float) -> int:
    """The side (binned px) of the template windows, one size for all views: centred on the
    isocenter ``p0``'s projection, large enough for the bone at any orientation (its support's
    bounding sphere, ``radius_mm``) plus the high-pass's reach."""
    half = []
    for n in rig.names:
        cam = rig[n]
        depth = float(cam.project(p0[None])[1][0])
        half.append(int(math.ceil(radius_mm * cam.K[0, 0] / depth / s + 2 * sigma)) + 2)
    return 2 * max(half) + 1


def _rotation_candidates(rotation: np.ndarray, templates: np.ndarray, targets: list[np.ndarray], off: np.ndarray,
                         sigma: float, P: list[np.ndarray], F: dict[tuple[int, int], np.ndarray], A: np.ndarray,
                         options: InitOptions) -> list[Candidate]:
    """Steps 3-4 for one rotation."""
    V = len(targets)
    maps = []
    for v in range(V):
        tm = templates[v].astype(np.float32)
        if not tm.max() > 0:
            return []
        hp = _highpass(tm, np.ones_like(tm), sigma)
        maps.append(cv2.matchTemplate(targets[v], hp, cv2.TM_CCOEFF_NORMED))
    out = []
    for a, b in ((0, 1), (1, 0)):
        for r, c in _peaks(maps[a], options.peaks, 2):
            ua = np.array([c, r], dtype=np.float64) + off[a]  # binned support centre in view a
            l_full = F[(a, b)] @ (A @ np.r_[ua, 1.0])
            lb = A.T @ l_full  # the epipolar line in view b's binned pixels
            mb = maps[b]
            rr, cc = np.mgrid[0:mb.shape[0], 0:mb.shape[1]]
            dist = np.abs(lb[0] * (cc + off[b][0]) + lb[1] * (rr + off[b][1]) + lb[2]) / math.hypot(lb[0], lb[1])
            band = np.where(dist <= options.band_px, mb, -np.inf)
            k = int(np.argmax(band))
            if not np.isfinite(band.flat[k]):
                continue
            ub = np.array([k % mb.shape[1], k // mb.shape[1]], dtype=np.float64) + off[b]
            full = {a: (A @ np.r_[ua, 1.0])[:2], b: (A @ np.r_[ub, 1.0])[:2]}
            X = triangulate_linear(P[a], P[b], full[a][None], full[b][None])[0]
            scores = []
            for v in range(V):
                h = P[v] @ np.r_[X, 1.0]
                if h[2] <= 0:
                    scores.append(-1.0)
                    continue
                u = np.linalg.solve(A, np.r_[h[:2] / h[2], 1.0])[:2] - off[v]
                ci, ri = int(round(u[0])), int(round(u[1]))
                ok = 0 <= ri < maps[v].shape[0] and 0 <= ci < maps[v].shape[1]
                scores.append(float(maps[v][ri, ci]) if ok else -1.0)
            out.append(Candidate(rotation, X, float(np.mean(scores)), tuple(scores)))
    return out


def _distinct(a_R: np.ndarray, a_x: np.ndarray, b_R: np.ndarray, b_x: np.ndarray, options: InitOptions) -> bool:
    return (rotation_angle_deg(a_R, b_R) > options.distinct_deg
            or float(np.linalg.norm(a_x - b_x)) > options.distinct_mm)


# refine(start) -> (pose or None when the bone left the views, loss, status)
Refine = Callable[[RigidPose], tuple["RigidPose | None", float, str]]


def initial_pose(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray],
                 masks: Mapping[str, np.ndarray] | None, refine: Refine, options: InitOptions = InitOptions(),
                 progress: bool = True) -> InitResult:
    """The bone's pose in one frame with no start (module docstring).

    Args:
        volume, rig, images, masks: as :func:`template_candidates`.
        refine: registers from a start: ``refine(start) -> (pose or None, loss, status)``, the
            losses comparable between poses (:func:`~stereodrr.track.bone_fit.frame_loss`).
        options: the search's settings.
    """
    result = _search(volume, rig, images, masks, refine, options, progress, pad=False)
    if result.status == "found":
        return result
    # Nothing found within the frames: a bone that leaves them, searched again with them padded.
    padded = _search(volume, rig, images, masks, refine, options, progress, pad=True)
    return padded if padded.status == "found" else result


def _search(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None,
            refine: Refine, options: InitOptions, progress: bool, pad: bool) -> InitResult:
    """One search: candidates (:func:`template_candidates`), the distinct best refined, the verdict."""
    t0 = time.perf_counter()
    cands = template_candidates(volume, rig, images, masks, options, progress, pad=pad)
    t1 = time.perf_counter()
    centre = support_corners(volume).mean(0)
    chosen: list[Candidate] = []
    for c in cands:
        if all(_distinct(c.rotation, c.position, d.rotation, d.position, options) for d in chosen):
            chosen.append(c)
        if len(chosen) == options.refine:
            break
    refined: list[tuple[Candidate, RigidPose, float, str]] = []
    for c in chosen:
        # Support centre -> position, as a pose about the volume centre.
        start = RigidPose.from_matrix(pose_matrix(c.rotation, c.position - centre, centre), volume.center)
        pose, loss, status = refine(start)
        refined.append((c, pose or start, loss if pose is not None else math.nan, status))
    t2 = time.perf_counter()
    seconds = {"search_s": t1 - t0, "refine_s": t2 - t1}
    table = pd.DataFrame([{"score": c.score, **{f"score_{n}": v for n, v in zip(rig.names, c.view_scores)},
                           "loss": loss, "status": status,
                           **dict(zip(("rx_deg", "ry_deg", "rz_deg"), pose.rotvec_deg)),
                           **dict(zip(("tx_mm", "ty_mm", "tz_mm"), pose.translation))}
                          for c, pose, loss, status in refined])
    ok = sorted((r for r in refined if math.isfinite(r[2])), key=lambda r: r[2])
    if not ok:
        return InitResult(None, "failed", f"none of the {len(refined)} refined candidates of the global search fits the "
                          "frame", math.nan, math.nan, table, seconds)
    _, bp, best, _ = ok[0]
    others = [r for r in ok[1:] if _distinct(bp.rotation, bp.translation, r[1].rotation, r[1].translation, options)]
    margin = others[0][2] - best if others else math.inf
    if margin < options.ambiguity:
        return InitResult(None, "ambiguous", f"two distinct poses fit about equally well (losses {best:.4f} and "
                          f"{others[0][2]:.4f}, closer than {options.ambiguity:g})", best, margin, table, seconds)
    return InitResult(bp, "found", f"best of {len(ok)} refined candidates, {margin:.4f} below the next distinct one",
                      best, margin, table, seconds)

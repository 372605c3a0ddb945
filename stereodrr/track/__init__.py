"""Tracking through the frames of real trials: implanted beads (detected, matched between
cameras, triangulated, linked into rigid bodies) and bones (their CT registered to every view of
each frame)."""

from .bead_detect import DETECTION_COLUMNS, BeadDetectOptions, detect_beads
from .bead_link import link_beads
from .bead_match import BeadMatchOptions, epipolar_distances, match_beads
from .bead_rigid import (
    POSE_COLUMNS,
    BeadLinkOptions,
    body_poses,
    body_references,
    expected_beads,
    merge_fragments,
    pair_spread,
    rigid_bodies,
)
from .beads import BeadTracking, BeadTrackOptions, FrameSource, MaskSource, track_beads

__all__ = [
    "DETECTION_COLUMNS", "BeadDetectOptions", "detect_beads", "link_beads", "BeadMatchOptions", "epipolar_distances",
    "match_beads", "POSE_COLUMNS", "BeadLinkOptions", "body_poses", "body_references", "expected_beads",
    "merge_fragments", "pair_spread", "rigid_bodies", "BeadTracking", "BeadTrackOptions", "FrameSource", "MaskSource",
    "track_beads",
]

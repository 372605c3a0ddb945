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
from .bone_fit import (
    BoneSupport,
    FrameFit,
    FrameStatus,
    JointOptions,
    TrackOptions,
    default_track_levels,
    frame_loss,
    predict_pose,
    register_frame,
)
from .bone_init import Candidate, InitOptions, InitResult, initial_pose, so3_grid, template_candidates
from .bone_joint import bead_bodies_of_bones, explain_away, track_bones
from .bone_views import CroppedViews, check_frame, crop_image, crop_views, cut_volume, projected_boxes, support_corners
from .bones import BoneTrack, FrameSeries, track_bone

__all__ = [
    "DETECTION_COLUMNS", "BeadDetectOptions", "detect_beads", "link_beads", "BeadMatchOptions", "epipolar_distances",
    "match_beads", "POSE_COLUMNS", "BeadLinkOptions", "body_poses", "body_references", "expected_beads",
    "merge_fragments", "pair_spread", "rigid_bodies", "BeadTracking", "BeadTrackOptions", "FrameSource", "MaskSource",
    "track_beads",
    "BoneSupport", "FrameFit", "FrameStatus", "TrackOptions", "default_track_levels", "frame_loss", "predict_pose", "register_frame",
    "Candidate", "InitOptions", "InitResult", "initial_pose", "so3_grid", "template_candidates",
    "CroppedViews", "check_frame", "crop_image", "crop_views", "cut_volume", "projected_boxes", "support_corners",
    "BoneTrack", "FrameSeries", "track_bone", "JointOptions", "bead_bodies_of_bones", "explain_away", "track_bones",
]

"""Real trials: calibrated cameras, frames per camera and the bones' CT volumes
(:func:`load_trial` reads Autoscoper trial files), frame reading, polarity, the image
intensifier's round field of view, and the line-integral frames registration uses."""

from .frames import (
    SEQUENCE_SUFFIXES,
    FieldOfView,
    Polarity,
    bright_air_frame,
    field_of_view,
    frame_polarity,
    line_integral_frame,
    read_frame,
    read_frame_size,
    read_image,
    read_page_sizes,
    sequence_files,
)
from .model import Trial, TrialVolume, load_trial

__all__ = ["SEQUENCE_SUFFIXES", "FieldOfView", "Polarity", "bright_air_frame", "field_of_view", "frame_polarity",
           "line_integral_frame", "read_frame", "read_image", "read_frame_size", "read_page_sizes", "sequence_files", "Trial", "TrialVolume", "load_trial"]

"""Tracking through the frames of real trials: implanted beads (detected, matched between
cameras, triangulated, linked into rigid bodies) and bones (their CT registered to every view of
each frame)."""

__all__: list[str] = []

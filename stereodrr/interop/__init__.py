"""Files of the tools XROMM and stereo X-ray labs use, read and written exactly as those tools
do: MayaCam 2.0 / 1.0 cameras (XMALab, Autoscoper) and VTK camera JSON (SlicerAutoscoperM), Autoscoper trial files, frame folders, TIFF
volumes and tracking results (``.tra``), XMALab's 2D / 3D point and rigid-body tables. Each writer is tested against a transliteration of
its consumer's reading code."""

from .autoscoper import (
    AutoscoperTrialFile,
    AutoscoperVolumeEntry,
    frame_files,
    load_autoscoper_volume,
    load_tra,
    matrix_to_xyzypr,
    read_tiff_stack,
    read_trial_file,
    save_tra,
    write_trial_file,
    xyzypr_to_matrix,
)
from .mayacam import (
    MAYACAM_TOLERANCE_PX,
    VTK_CAMERA_SCHEMA,
    load_mayacam,
    load_mayacam1,
    load_vtk_camera,
    mayacam_version,
    save_mayacam,
    save_mayacam1,
)
from .xmalab import (
    PixelConvention,
    body_name,
    load_points2d,
    load_points3d,
    load_rigid_body_transforms,
    marker_name,
    save_points2d,
    save_points3d,
    save_rigid_body_transforms,
)

__all__ = [
    "AutoscoperTrialFile", "AutoscoperVolumeEntry", "frame_files", "load_autoscoper_volume", "load_tra",
    "matrix_to_xyzypr", "read_tiff_stack", "read_trial_file", "save_tra", "write_trial_file", "xyzypr_to_matrix",
    "MAYACAM_TOLERANCE_PX", "VTK_CAMERA_SCHEMA", "load_mayacam", "load_mayacam1", "load_vtk_camera", "mayacam_version",
    "save_mayacam", "save_mayacam1",
    "PixelConvention", "body_name", "load_points2d", "load_points3d", "load_rigid_body_transforms", "marker_name",
    "save_points2d", "save_points3d", "save_rigid_body_transforms",
]

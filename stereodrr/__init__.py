"""stereodrr: stereo X-ray simulation and calibration.

Stages (data flows left to right): ``geometry`` / ``physics`` -> ``volume`` / ``phantoms`` ->
``render`` (the projector) -> ``imaging`` (the detector chain) -> ``calib`` -> ``registration`` ->
``dataset``; ``plot`` and ``cli`` sit on top.

The top level holds what a user needs for the whole chain (imported on first use, so
``import stereodrr`` stays cheap)::

    import stereodrr as sd

    ct = sd.Volume.from_numpy(mu, spacing=(1, 1, 1))         # or sd.load_volume("ct.nii.gz")
    rig = sd.StereoRig.convergent(5, 750, 1200, 0.3, 512, 512)
    images = sd.render_rig(ct, rig)                            # {view: (H, W)} line integrals
    result = sd.register(ct, rig, images)                      # RegistrationResult, .pose
    calib = sd.calibrate_stereo(shots, sd.load_phantom("lego_stereo").marker_table(), rig)

==========================  ===========================================================
geometry                    ``Camera``, ``StereoRig``, ``RigidPose``, ``load_rig``, ``save_rig``
volumes and phantoms        ``Volume``, ``load_volume``, ``save_volume``, ``hu_to_mu``,
                            ``mu_to_hu``, ``torso_phantom``, ``load_phantom``, ``voxelize``
rendering                   ``render_drr``, ``render_rig``, ``drr`` (the tensor core),
                            ``Projector`` (mode, step, backend)
imaging                     ``simulate`` (scene, cameras, projector, detector -> images),
                            ``Scene``, ``DetectorModel``, ``render_polychromatic``
calibration                 ``calibrate_stereo``
registration                ``register``, ``registration_errors``, ``load_pose``, ``save_pose``
datasets                    ``generate_dataset``, ``load_config``, ``StereoDRRDataset``
==========================  ===========================================================

Everything else is public in its sub-package (``stereodrr.calib``, ``stereodrr.render``, ...,
each with its own ``__all__``). The registration's sub-package is ``stereodrr.registration``;
``from stereodrr.register import ...`` still works for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import importlib
import os as _os
from typing import TYPE_CHECKING, Any

from . import _deprecation

__version__ = "0.1.0"

# Idle OpenMP workers sleep instead of spinning (libgomp reads this when torch loads it, so it
# must come before any import of torch); unless the user chose a policy. Why and what it
# measured: stereodrr.render.threads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> the module that defines it (imported when the name is first used)
_EXPORTS = {
    "Camera": "stereodrr.geometry", "StereoRig": "stereodrr.geometry", "RigidPose": "stereodrr.geometry",
    "load_rig": "stereodrr.geometry", "save_rig": "stereodrr.geometry",
    "Volume": "stereodrr.volume", "load_volume": "stereodrr.volume", "save_volume": "stereodrr.volume",
    "hu_to_mu": "stereodrr.volume", "mu_to_hu": "stereodrr.volume", "torso_phantom": "stereodrr.phantoms",
    "load_phantom": "stereodrr.phantoms", "voxelize": "stereodrr.phantoms",
    "render_drr": "stereodrr.render", "render_rig": "stereodrr.render", "drr": "stereodrr.render",
    "Projector": "stereodrr.render", "simulate": "stereodrr.imaging", "Scene": "stereodrr.imaging",
    "render_polychromatic": "stereodrr.imaging", "DetectorModel": "stereodrr.imaging",
    "calibrate_stereo": "stereodrr.calib",
    "register": "stereodrr.registration", "registration_errors": "stereodrr.registration",
    "load_pose": "stereodrr.registration", "save_pose": "stereodrr.registration",
    "generate_dataset": "stereodrr.dataset", "load_config": "stereodrr.dataset",
    "StereoDRRDataset": "stereodrr.dataset",
}

__all__ = [
    "__version__",
    "Camera", "StereoRig", "RigidPose", "load_rig", "save_rig",
    "Volume", "load_volume", "save_volume", "hu_to_mu", "mu_to_hu", "torso_phantom", "load_phantom", "voxelize",
    "render_drr", "render_rig", "drr", "Projector", "simulate", "Scene", "render_polychromatic", "DetectorModel",
    "calibrate_stereo", "register", "registration_errors", "load_pose", "save_pose",
    "generate_dataset", "load_config", "StereoDRRDataset",
]

if TYPE_CHECKING:
    from .calib import calibrate_stereo
    from .dataset import StereoDRRDataset, generate_dataset, load_config
    from .geometry import Camera, RigidPose, StereoRig, load_rig, save_rig
    from .imaging import DetectorModel, Scene, render_polychromatic, simulate
    from .phantoms import load_phantom, torso_phantom, voxelize
    from .registration import load_pose, register, registration_errors, save_pose
    from .render import Projector, drr, render_drr, render_rig
    from .volume import Volume, hu_to_mu, load_volume, mu_to_hu, save_volume


# The registration sub-package was ``stereodrr.register`` until it was renamed so that
# ``stereodrr.register`` can be the function alone.
_deprecation.alias_module("stereodrr.register", "stereodrr.registration",
                          {m: f"stereodrr.registration.{m}" for m in ("inputs", "metrics", "pose", "precision",
                                                                      "similarity")}
                          | {"optimize": "stereodrr.registration"})


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stereodrr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

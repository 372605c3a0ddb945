"""The top-level API: ``import stereodrr as sd`` gives the documented names, lazily."""

import subprocess
import sys

import stereodrr as sd

DOCUMENTED = [
    "Camera", "StereoRig", "RigidPose", "load_rig", "save_rig",
    "Volume", "load_volume", "save_volume", "hu_to_mu", "mu_to_hu", "torso_phantom", "load_phantom", "voxelize",
    "render_drr", "render_rig", "drr", "Projector", "simulate", "Scene", "render_polychromatic", "DetectorModel",
    "calibrate_stereo", "register", "registration_errors", "load_pose", "save_pose",
    "generate_dataset", "load_config", "StereoDRRDataset",
]


def test_documented_names_resolve_to_their_definitions():
    import stereodrr.calib.pipeline
    import stereodrr.geometry.pose
    import stereodrr.register.optimize
    import stereodrr.volume

    assert sorted(DOCUMENTED) == sorted(n for n in sd.__all__ if n != "__version__") == sorted(sd._EXPORTS)
    for name in DOCUMENTED:
        assert f"``{name}``" in sd.__doc__, name  # the module docstring lists it
        assert name in dir(sd)
        assert getattr(sd, name) is not None
    # the same objects as in their modules, not copies
    assert sd.Volume is stereodrr.volume.Volume
    assert sd.RigidPose is stereodrr.geometry.pose.RigidPose
    assert sd.render_drr is sys.modules["stereodrr.render.drr"].render_drr
    # stereodrr.register is the subpackage (importing it binds the name) and calls register()
    assert sd.register is sys.modules["stereodrr.register"] and callable(sd.register)
    assert sd.calibrate_stereo is stereodrr.calib.pipeline.calibrate_stereo


def test_unknown_name_is_an_attribute_error():
    try:
        sd.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_is_lazy():
    code = "import sys, stereodrr; assert 'torch' not in sys.modules, 'torch imported'; stereodrr.StereoRig"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_subpackages_list_what_they_export():
    import importlib

    for pkg in ("geometry", "phantoms", "render", "imaging", "calib", "register", "dataset", "physics", "interop", "trial", "track",
                "distortion"):
        mod = importlib.import_module(f"stereodrr.{pkg}")
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, (pkg, missing)
    assert len(importlib.import_module("stereodrr.calib").__all__) <= 30


def test_sd_register_calls_the_registration():
    import numpy as np
    import pytest

    import stereodrr.register  # noqa: F401  (binds the subpackage to sd.register)

    vol = sd.Volume.from_numpy(np.ones((4, 4, 4)))
    rig = sd.StereoRig.convergent(5, 750, 1200, 0.5, 8, 8)
    with pytest.raises(ValueError, match=r"image: expected one per rig view \['left', 'right'\]"):
        sd.register(vol, rig, {})

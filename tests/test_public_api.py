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
    import stereodrr.registration.run
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
    # stereodrr.register is the function; the sub-package is stereodrr.registration
    assert sd.register is stereodrr.registration.run.register
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

    for pkg in ("geometry", "phantoms", "render", "imaging", "calib", "registration", "dataset", "physics", "interop", "trial", "track",
                "distortion"):
        mod = importlib.import_module(f"stereodrr.{pkg}")
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, (pkg, missing)
    assert len(importlib.import_module("stereodrr.calib").__all__) <= 30


def test_names_moved_out_of_render_are_still_found_there_with_a_warning():
    import pytest

    import stereodrr.imaging
    import stereodrr.physics
    import stereodrr.render as render

    with pytest.warns(DeprecationWarning, match=r"^stereodrr\.render\.detector_preset moved to "
                                                r"stereodrr\.imaging\.detector_preset$"):
        from stereodrr.render import detector_preset
    assert detector_preset is stereodrr.imaging.detector_preset
    with pytest.warns(DeprecationWarning, match=r"^stereodrr\.render\.gaussian_blur moved to "
                                                r"stereodrr\.physics\.gaussian_blur$"):
        assert render.gaussian_blur is stereodrr.physics.gaussian_blur
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        render.no_such_thing  # noqa: B018

def test_sd_register_calls_the_registration():
    import numpy as np
    import pytest

    vol = sd.Volume.from_numpy(np.ones((4, 4, 4)))
    rig = sd.StereoRig.convergent(5, 750, 1200, 0.5, 8, 8)
    with pytest.raises(ValueError, match=r"image: expected one per rig view \['left', 'right'\]"):
        sd.register(vol, rig, {})


def test_the_former_subpackage_name_is_a_warning_alias_that_never_shadows_the_function():
    import warnings

    import pytest

    import stereodrr.register  # noqa: F401  (the alias: must not rebind sd.register)
    from stereodrr.registration import Level, register
    from stereodrr.registration.similarity import ncc

    assert sd.register is register and callable(sd.register)
    with pytest.warns(DeprecationWarning, match="import Level from stereodrr.registration"):
        from stereodrr.register import Level as OldLevel
    assert OldLevel is Level
    with pytest.warns(DeprecationWarning, match="stereodrr.register.similarity is deprecated"):
        from stereodrr.register.similarity import ncc as old_ncc
    assert old_ncc is ncc
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import stereodrr.register as reg  # binds the attribute, which is the function
    assert reg is register and sd.register is register
    code = ("import warnings, stereodrr as sd; warnings.simplefilter('error', DeprecationWarning); "
            "import stereodrr.register; assert callable(sd.register) and sd.register.__module__ == "
            "'stereodrr.registration.run', sd.register")
    subprocess.run([sys.executable, "-c", code], check=True)

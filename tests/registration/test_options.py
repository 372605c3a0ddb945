"""register's options object, its progress callback, the former keywords, a user's optimiser in
the OPTIMIZERS table, and the memory guard."""

import math

import numpy as np
import pytest
import torch

from stereodrr.geometry import StereoRig
from stereodrr.phantoms import torso_phantom
from stereodrr.registration import (
    OPTIMIZERS,
    Level,
    Optimizer,
    RegistrationOptions,
    RegistrationProgress,
    RigidPose,
    register,
    render_views,
)
from stereodrr.resources import ResourceError
from stereodrr.volume import hu_to_mu

LEVELS = (Level(4, 6, 2), Level(2, 4, 2))


@pytest.fixture(scope="module")
def scene():
    ct = torso_phantom(size=(24, 20, 16), spacing=12.0)
    volume = ct.with_data(hu_to_mu(ct.data))
    rig = StereoRig.convergent(5.0, 750, 1200, 12.0, 32, 32)
    targets = render_views(volume, rig, RigidPose.identity(volume.center))
    init = RigidPose.from_degrees([1.0, -0.5, 0.5], [3.0, -2.0, 1.0], volume.center)
    return volume, rig, targets, init


def test_options_and_the_former_keywords_give_the_same_result(scene):
    volume, rig, targets, init = scene
    new = register(volume, rig, targets, init, RegistrationOptions(levels=LEVELS, lr_translation_mm=3.0,
                                                                   progress=False))
    with pytest.warns(DeprecationWarning, match=r"register\(levels=, lr_translation_mm=, progress=\) is deprecated: "
                                                r"pass options=RegistrationOptions\(levels=\.\.\., "):
        old = register(volume, rig, targets, init, levels=LEVELS, lr_translation_mm=3.0, progress=False)
    np.testing.assert_array_equal(new.pose.matrix, old.pose.matrix)
    with pytest.raises(TypeError, match="unexpected keyword argument 'iterations'"):
        register(volume, rig, targets, init, iterations=3)


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        RegistrationOptions(optimizer="sgd2")
    with pytest.raises(ValueError, match="levels: expected at least one"):
        RegistrationOptions(levels=())
    with pytest.raises(ValueError, match="lr_rotation_deg: expected a positive number"):
        RegistrationOptions(lr_rotation_deg=math.nan)
    assert RegistrationOptions(levels=list(LEVELS)).levels == LEVELS  # any sequence, kept as a tuple


def test_callback_sees_every_evaluation_and_can_stop_the_run(scene):
    volume, rig, targets, init = scene
    seen: list[RegistrationProgress] = []
    res = register(volume, rig, targets, init, RegistrationOptions(levels=LEVELS, progress=False), seen.append)
    assert [p.iteration for p in seen] == list(range(len(res.history)))
    assert [p.level for p in seen] == res.history["level"].tolist() and {p.levels for p in seen} == {2}
    np.testing.assert_allclose(seen[0].pose.matrix, init.matrix, atol=1e-12)
    assert seen[0].loss == res.history["loss"].iloc[0]
    assert all(p.best_loss <= p.loss for p in seen)

    def stop_at_three(p: RegistrationProgress) -> bool:
        return p.iteration >= 3

    stopped = register(volume, rig, targets, init, RegistrationOptions(levels=LEVELS, progress=False), stop_at_three)
    assert stopped.status == "stopped" and "level 0: stopped by the callback at iteration 3" in stopped.message
    assert len(stopped.history) == 4 and np.all(np.isfinite(stopped.pose.matrix))

    def cancel(p: RegistrationProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        register(volume, rig, targets, init, RegistrationOptions(levels=LEVELS, progress=False), cancel)


class _Descent:
    """The docs' example optimiser (docs/extending.md): plain gradient descent."""

    def __init__(self, params, lr_rad, lr_mm, patience):
        self.opt = torch.optim.SGD([{"params": [params.rot], "lr": lr_rad * 0.01},
                                    {"params": [params.trans], "lr": lr_mm * 0.01}])
        self.sizes = (math.degrees(lr_rad), lr_mm)

    def iterate(self, f):
        f.steps = self.sizes
        self.opt.zero_grad()
        loss = f(grad=True)
        if not torch.isfinite(loss):
            return None
        loss.backward()
        self.opt.step()
        return self.sizes

    def confirm(self, f, small):
        return True

    def curvature(self, f):
        return None

    def receive(self, curvature):
        pass


def test_an_optimiser_added_to_the_table_is_used_by_name(scene, monkeypatch):
    volume, rig, targets, init = scene
    assert isinstance(_Descent(*_probe()), Optimizer)
    monkeypatch.setitem(OPTIMIZERS, "descent", _Descent)
    res = register(volume, rig, targets, init,
                   RegistrationOptions(levels=(Level(4, 5, 2, optimizer="descent"),), progress=False))
    assert res.history["optimizer"].eq("descent").all() and len(res.history) == 5
    assert res.history["loss"].iloc[-1] < res.history["loss"].iloc[0]


def _probe():
    from stereodrr.registration.params import PoseParameters

    params = PoseParameters(RigidPose.identity(np.zeros(3)), torch.eye(3, dtype=torch.float64), "rotvec",
                            torch.device("cpu"))
    return params, 0.01, 1.0, 8


def test_a_rig_too_large_for_memory_is_refused_before_anything_is_allocated(scene, monkeypatch):
    volume, _, _, _ = scene
    huge = StereoRig.convergent(5.0, 750, 1200, 0.01, 100000, 100000)
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "2G")
    with pytest.raises(ResourceError, match=r"^rig: 2 view\(s\) of 100000 x 100000, 100000 x 100000 px needs about "
                                            r".* TiB of memory, over the budget of 2\.0 GiB"):
        register(volume, huge, {"left": np.zeros((2, 2)), "right": np.zeros((2, 2))})


def test_tracking_refuses_a_rig_too_large_for_memory(scene, monkeypatch):
    from stereodrr.track import FrameSeries, track_bone, track_bones

    volume, _, _, _ = scene
    huge = StereoRig.convergent(5.0, 750, 1200, 0.01, 100000, 100000)
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "2G")

    def never(k):
        raise AssertionError("a frame was read")

    with pytest.raises(ResourceError, match="^rig: 2 view"):
        track_bone(volume, huge, never, n_frames=3)
    with pytest.raises(ResourceError, match="^rig: 2 view"):
        track_bones([volume], huge, FrameSeries(never, n_frames=3))
    with pytest.warns(DeprecationWarning, match=r"track_bones\(n_frames=\) is deprecated: pass "
                                                r"frames=FrameSeries\(n_frames=\.\.\.\)"):
        with pytest.raises(ResourceError, match="^rig: 2 view"):
            track_bones([volume], huge, never, n_frames=3)

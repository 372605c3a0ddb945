"""The registration on a device other than the CPU, with the ``meta`` device standing in for CUDA
(tests/meta_device.py): every tensor on the volume's device, host copies only where values are read."""

import numpy as np
import pytest
import torch

from stereodrr.geometry import StereoRig
from stereodrr.phantoms import torso_phantom
from stereodrr.registration import (
    Level,
    RegistrationOptions,
    RigidPose,
    pose_fisher_information,
    register,
    render_views,
    translation_basis,
)
from stereodrr.registration import run as run_module
from stereodrr.registration.objective import History, Objective
from stereodrr.registration.optimizers import QuasiNewton
from stereodrr.registration.params import PoseParameters
from stereodrr.volume import hu_to_mu

from ..meta_device import ValuesOnHost, torch_backend_without_checkpoints  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def volume():
    ct = torso_phantom(size=(24, 20, 16), spacing=12.0)
    return ct.with_data(hu_to_mu(ct.data))


@pytest.fixture(scope="module")
def rig():
    return StereoRig.convergent(5.0, 750, 1200, 16.0, 32, 32)


def test_bfgs_gradient_of_a_parameter_the_loss_does_not_reach_is_on_the_parameters_device(volume, rig):
    basis = torch.as_tensor(translation_basis(rig), dtype=torch.float64, device="meta")
    params = PoseParameters(RigidPose.identity(volume.center), basis, "rotvec", torch.device("meta"))
    stepper = QuasiNewton(params, 0.01, 1.0, 5)

    def evaluate() -> tuple[torch.Tensor, torch.Tensor]:  # a loss of the translation alone
        loss = params.trans.sum()
        return loss, loss[None]

    start = RigidPose.identity(volume.center)
    f = Objective(evaluate, params, History(rig, None, volume.corners(), 0.0), start, lambda value, pose: None)
    with ValuesOnHost():
        _, g = stepper._evaluate(f, stepper.x)
    assert g is not None and g.device.type == "meta" and g.shape == (6,)


def test_fisher_information_of_a_volume_on_a_device_comes_back_as_numpy(volume, rig):
    with ValuesOnHost():
        F = pose_fisher_information(volume.to("meta"), rig)
    assert isinstance(F, np.ndarray) and F.shape == (6, 6)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_registration_runs_on_the_volumes_device(volume, rig, optimizer, monkeypatch,
                                                 torch_backend_without_checkpoints):  # noqa: F811
    targets = [t.numpy() for t in render_views(volume, rig, RigidPose.identity(volume.center))]
    # The target checks read pixel values, which the stand-in device does not have.
    monkeypatch.setattr(run_module, "check_target", lambda *args: None)
    options = RegistrationOptions(levels=(Level(2, 2), Level(1, 2, similarity="gncc")), optimizer=optimizer,
                                  progress=False)
    with ValuesOnHost():
        res = register(volume.to("meta"), rig, targets, None, options, masks=[np.ones((32, 32))] * 2,
                       truth=RigidPose.identity(volume.center))
    assert set(res.rendered) == set(rig.names) and len(res.history) > 0

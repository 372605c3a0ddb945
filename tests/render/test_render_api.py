"""Wrappers, chunking, label channels, torch.compile and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera, StereoRig
from stereodrr.phantoms import torso_phantom
from stereodrr.render import Projector, RaysMissWarning, drr, render_drr, render_rig, render_structures
from stereodrr.volume import Volume, hu_to_mu

from .conftest import device_for


@pytest.fixture(scope="module")
def torso() -> Volume:
    hu = torso_phantom(size=(32, 24, 20), spacing=(5.0, 5.5, 6.0), supersample=1)
    return hu.with_data(hu_to_mu(hu.data))


@pytest.fixture(scope="module")
def rig() -> StereoRig:
    return StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=40, height=32)


def test_render_drr_shapes_and_rig_order(torso, rig):
    img = render_drr(torso, rig)
    assert img.shape == (2, 32, 40) and img.dtype == torch.float32
    assert float(img.min()) >= 0 and float(img.max()) > 0.5
    single = render_drr(torso, rig[rig.names[1]])
    assert torch.allclose(single[0], img[1])


def test_mixed_detector_sizes(torso, rig):
    small = Camera.look_at(rig[rig.names[0]].center, rig.isocenter, sdd=1000, pixel_spacing=8.0, width=20, height=16)
    cams = {"big": rig[rig.names[0]], "small": small}
    with pytest.raises(ValueError, match="big 40x32, small 20x16"):
        render_drr(torso, cams)
    out = render_rig(torso, cams)
    assert list(out) == ["big", "small"] and out["small"].shape == (16, 20)


@pytest.mark.parametrize("chunk_rays", [517, 40 * 32, 3 * 40 * 32])
def test_chunking_does_not_change_the_image(torso, rig, render_path, chunk_rays):
    """Chunks inside a view, of exactly one view, and of several views at once."""
    if render_path["backend"] == "triton" and chunk_rays != 3 * 40 * 32 and not torch.cuda.is_available():
        pytest.skip("Triton's interpreter: one chunk size in the default run (every view in one launch is "
                    "the default chunking, checked by the other tests)")
    data, A, K, R, t = (x.to(device_for(render_path["backend"])) for x in _core_args(torso, rig))
    K, R, t = (torch.cat([x, x.flip(0)]) for x in (K, R, t))  # 4 views
    ref = drr(data, A, K, R, t, 32, 40, projector=Projector(**render_path))
    assert torch.allclose(ref[0], ref[3]) and not torch.allclose(ref[0], ref[1])
    out = drr(data, A, K, R, t, 32, 40, projector=Projector(chunk_rays=chunk_rays, **render_path))
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_label_channels_sum_to_the_full_render(torso, rig):
    labels = (torso.data > 0.015).to(torch.int64) + (torso.data > 0.03).to(torch.int64)
    chans, values = render_structures(torso, labels, rig, projector=Projector(mode="exact"))
    assert values == [0, 1, 2] and chans.shape == (2, 3, 32, 40)
    assert torch.allclose(chans.sum(1), render_drr(torso, rig, projector=Projector(mode="exact")), rtol=1e-5, atol=1e-5)
    tri, _ = render_structures(torso, labels, rig)
    assert torch.allclose(tri.sum(1), render_drr(torso, rig), rtol=1e-5, atol=1e-5)


def test_former_projector_keywords_warn_and_mean_the_same(torso, rig):
    """``mode=``, ``step_mm=``, ``backend=``, ``chunk_rays=`` (now a Projector's fields) still work
    for one release on every function that takes a projector, with a DeprecationWarning."""
    data, A, K, R, t = _core_args(torso, rig)
    new = drr(data, A, K, R, t, 32, 40, projector=Projector("trilinear", 3.0, "torch", 517))
    with pytest.warns(DeprecationWarning, match=r"^drr\(mode=, step_mm=, backend=, chunk_rays=\) is deprecated: pass "
                                                r"projector=Projector\(mode=\.\.\., step_mm=\.\.\., backend=\.\.\., "
                                                r"chunk_rays=\.\.\.\)$"):
        old = drr(data, A, K, R, t, 32, 40, mode="trilinear", step_mm=3.0, backend="torch", chunk_rays=517)
    assert torch.equal(old, new)
    exact = Projector("exact")
    labels = (torso.data > 0.015).to(torch.int64)
    for fn, args in ((render_drr, (torso, rig)), (render_rig, (torso, rig)), (render_structures, (torso, labels, rig))):
        new = fn(*args, projector=exact)
        with pytest.warns(DeprecationWarning, match=rf"^{fn.__name__}\(mode=\) is deprecated: pass "
                                                    r"projector=Projector\(mode=\.\.\.\)$"):
            old = fn(*args, mode="exact")
        if fn is render_rig:
            old, new = torch.stack(list(old.values())), torch.stack(list(new.values()))
        elif fn is render_structures:
            assert old[1] == new[1]
            old, new = old[0], new[0]
        assert torch.equal(old, new)
    with pytest.raises(ValueError, match="not both"):
        drr(data, A, K, R, t, 32, 40, projector=exact, mode="exact")


def test_rays_missing_the_volume_give_zeros_and_a_warning(torso):
    away = Camera.look_at(torso.center + np.array([5000.0, 0, 0]), torso.center + np.array([5000.0, 600.0, 0]),
                          sdd=1000, pixel_spacing=1.0, width=8, height=6)
    for mode in ("trilinear", "exact"):
        with pytest.warns(RaysMissWarning, match="view 0"):
            img = render_drr(torso, away, projector=Projector(mode=mode))
        assert torch.equal(img, torch.zeros(1, 6, 8))


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("mode", ["exact", "joseph", "trilinear"])
def test_a_ray_on_either_box_face_counts_and_a_source_on_a_face_has_plain_gradients(mode, backend):
    """The box is closed: a ray lying in its low or its high face integrates the face's voxels
    (the high one used to miss), one just outside it renders 0 (the torch trilinear path used
    to fail on it: its segment started at infinity), and a source on a face gives gradients of
    the image's size (they were ~1e77 through the parallel axes' stand-in direction)."""
    vol = Volume.from_numpy(np.ones((4, 4, 4)))  # box -0.5 .. 3.5 mm
    R = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # looking along +y
    K = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 1]])
    for x, want in ((-0.5, 4.0), (3.5, 4.0), (3.6, 0.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RaysMissWarning)
            got = render_drr(vol, Camera(K=K, R=R, t=-R @ np.array([x, -50.0, 1.5]), width=1, height=1),
                             projector=Projector(mode, backend=backend))
        assert float(got) == pytest.approx(want, abs=1e-5), (x, float(got))
    K3 = np.array([[2.0, 0, 1], [0, 2, 1], [0, 0, 1]])
    cam = Camera(K=K3, R=R, t=-R @ np.array([-0.5, 1.2, 1.7]), width=3, height=3)
    Kt, Rt, tt = (torch.tensor(a, dtype=torch.float64)[None] for a in (cam.K, cam.R, cam.t))
    Rt.requires_grad_(True)
    tt.requires_grad_(True)
    drr(torch.ones(4, 4, 4, dtype=torch.float64), vol.index_from_world_tensor(torch.float64), Kt, Rt, tt, 3, 3,
        Projector(mode, backend=backend)).sum().backward()
    assert float(tt.grad.abs().max()) < 100 and float(Rt.grad.abs().max()) < 100


def _core_args(torso: Volume, rig: StereoRig):
    A = torch.linalg.inv(torch.tensor(torso.affine)).float()
    K, R, t = (torch.stack(x) for x in zip(*(rig[n].to_torch() for n in rig.names)))
    return torso.data, A, K, R, t


def test_bad_input(torso, rig, unchecked):
    data, A, K, R, t = _core_args(torso, rig)
    with pytest.raises(ValueError, match="K: on cpu as torch.float64"):
        drr(data, A, K.double(), R, t, 32, 40)
    with pytest.raises(ValueError, match="image size"):
        drr(data, A, K, R, t, 0, 40)
    with pytest.raises(ValueError, match="image size"):
        drr(data, A, K, R, t, 32, -3)
    bad = data.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="data: 1 voxel"):
        drr(bad, A, K, R, t, 32, 40)
    t_bad = t.clone()
    t_bad[0, 1] = float("inf")
    with pytest.raises(ValueError, match="t: contains NaN or inf"):
        drr(data, A, K, R, t_bad, 32, 40)
    with pytest.raises(ValueError, match="mode"):
        drr(data, A, K, R, t, 32, 40, projector=Projector(mode="cubic"))
    with pytest.raises(ValueError, match="step_mm"):
        drr(data, A, K, R, t, 32, 40, projector=Projector(step_mm=0.0))
    with pytest.raises(ValueError, match="R: expected a tensor of shape"):
        drr(data, A, K, R[:, :2], t, 32, 40)
    # Degenerate maps rendered silently: a zero focal length as zeros, a singular affine as NaN.
    K_bad = K.clone()
    K_bad[1, 1, 1] = 0.0
    with pytest.raises(ValueError, match=r"K: view\(s\) \[1\] have a zero on the diagonal"):
        drr(data, A, K_bad, R, t, 32, 40)
    with pytest.raises(ValueError, match="index_from_world: its 3x3 block is singular"):
        drr(data, A * torch.tensor([1.0, 1.0, 0.0, 1.0])[:, None], K, R, t, 32, 40)
    with pytest.raises(ValueError, match="data: expected at least one voxel"):
        drr(data[:0], A, K, R, t, 32, 40)
    if torch.cuda.is_available():  # pragma: no cover - needs a GPU
        with pytest.raises(ValueError, match="on cpu"):
            drr(data.cuda(), A.cuda(), K, R.cuda(), t.cuda(), 32, 40)


def test_a_volume_written_in_place_after_a_render_is_checked_again(torso, rig):
    """The volume's finiteness check is remembered per tensor until torch's version counter moves:
    a NaN written in place (directly or through a view) after a clean render is still caught."""
    data, A, K, R, t = _core_args(torso, rig)
    vol = data.clone()
    drr(vol, A, K, R, t, 8, 10)
    vol[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="data: 1 voxel"):
        drr(vol, A, K, R, t, 8, 10)
    vol[1, 2, 3] = 0.0
    drr(vol, A, K, R, t, 8, 10)
    vol[2:4].mul_(float("inf"))  # through a view: inf where nonzero, NaN where zero
    with pytest.raises(ValueError, match="voxel"):
        drr(vol, A, K, R, t, 8, 10)


@pytest.mark.slow
def test_torch_compile_matches_eager_with_gradients(torso, rig, unchecked):
    # unchecked: the suite's run-time annotation checks cannot read dynamo's fake tensors (beartype
    # raises a desynchronisation error on them); what is tested here is the compiled op.
    data, A, K, R, t = _core_args(torso, rig)
    t = t.clone().requires_grad_(True)
    eager = drr(data, A, K, R, t, 32, 40)
    (g_eager,) = torch.autograd.grad(eager.sum(), t)
    compiled = torch.compile(drr)
    out = compiled(data, A, K, R, t, 32, 40)
    (g_compiled,) = torch.autograd.grad(out.sum(), t)
    assert torch.allclose(out, eager, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g_compiled, g_eager, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["trilinear", "joseph", "exact"])
def test_render_drr_low_precision_volume(torso, rig, dtype, mode):
    """A bfloat16/float16 Volume renders with float32 geometry: the image equals the float32
    render of the same (rounded) voxel values, in float32."""
    low = torso.with_data(torso.data.to(dtype))
    img = render_drr(low, rig, projector=Projector(mode=mode))
    ref = render_drr(torso.with_data(low.data.float()), rig, projector=Projector(mode=mode))
    assert img.dtype == torch.float32 and float(ref.max()) > 0.5
    assert torch.allclose(img, ref, rtol=1e-5, atol=1e-5)

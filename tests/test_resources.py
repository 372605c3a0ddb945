"""The memory budget, built-in phantoms by name, and view names in the miss warning."""

import warnings

import numpy as np
import pytest

from stereodrr.geometry import Camera, StereoRig
from stereodrr.phantoms import load_phantom
from stereodrr.phantoms.io import BUILTIN_DIR, builtin_phantoms, resolve_phantom
from stereodrr.render import RaysMissWarning, render_rig
from stereodrr.resources import ResourceError, check_memory, memory_budget
from stereodrr.volume import Volume


@pytest.mark.parametrize("text, expected", [("8G", 8 << 30), ("512M", 512 << 20), ("2e9", 2_000_000_000),
                                            ("1.5GiB", int(1.5 * (1 << 30))), ("100k", 100 << 10)])
def test_budget_sizes(monkeypatch, text, expected):
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", text)
    assert memory_budget()[0] == expected


def test_budget_fraction_and_default(monkeypatch):
    import stereodrr.resources as res

    monkeypatch.setattr(res, "available_memory", lambda device=None: 1000 << 20)
    monkeypatch.delenv("STEREODRR_MEMORY_BUDGET", raising=False)
    assert memory_budget()[0] == int(res.DEFAULT_FRACTION * (1000 << 20))
    for text in ("0.25", "25%"):
        monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", text)
        assert memory_budget()[0] == 250 << 20
    for bad in ("lots", "-1G", "0", "inf"):
        monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", bad)
        with pytest.raises(ValueError, match="STEREODRR_MEMORY_BUDGET"):
            memory_budget()


def test_budget_over_a_hundred_percent_and_a_fractional_byte_count(monkeypatch):
    """150% read as 1.5 bytes and "1.5" as one byte: every job was refused with a budget of 1 B."""
    import stereodrr.resources as res

    monkeypatch.setattr(res, "available_memory", lambda device=None: 1000 << 20)
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "150%")
    assert memory_budget()[0] == 1500 << 20
    for bad in ("1.5", "1.5B", "100.5"):
        monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", bad)
        with pytest.raises(ValueError, match="whole number of bytes"):
            memory_budget()


def test_check_memory_names_the_job_and_sizes(monkeypatch):
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "1G")
    check_memory(1 << 29, "half a gigabyte")
    with pytest.raises(ResourceError, match=r"the big job needs about 2\.0 GiB .* budget of 1\.0 GiB"):
        check_memory(2 << 30, "the big job")


def test_a_job_on_a_gpu_is_budgeted_against_that_gpus_free_memory(monkeypatch):
    """A job whose tensors live on a CUDA device is refused by the device's free memory (what
    torch.cuda.mem_get_info reports for it), not the host's, before anything is allocated there."""
    import torch

    import stereodrr.resources as res

    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (asked.append(device), (1 << 30, 80 << 30))[1])
    monkeypatch.setattr(res, "available_memory", lambda device=None, _real=res.available_memory:
                        _real(device) if str(device).startswith("cuda") else 64 << 30)
    monkeypatch.delenv("STEREODRR_MEMORY_BUDGET", raising=False)
    check_memory(4 << 30, "a host job")  # half of the host's 64 GiB
    with pytest.raises(ResourceError, match=r"register: 2 views needs about 4\.0 GiB .* 1\.0 GiB available on cuda:1"):
        check_memory(4 << 30, "register: 2 views", device="cuda:1")
    assert asked == [torch.device("cuda:1")]
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "90%")
    assert memory_budget(torch.device("cuda", 1))[0] == int(0.9 * (1 << 30))
    assert memory_budget("cpu")[0] == int(0.9 * (64 << 30))
    # blocks torch's allocator keeps cached after earlier renders are free for the next job
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 << 30)
    assert memory_budget(torch.device("cuda", 1))[0] == int(0.9 * (3 << 30))


def test_builtin_phantoms_by_name(tmp_path, monkeypatch):
    assert builtin_phantoms() == ["lego_cube", "lego_stereo", "torso"]
    monkeypatch.chdir(tmp_path)  # any folder
    for name in ("lego_stereo", "lego_stereo.json"):
        assert resolve_phantom(name) == BUILTIN_DIR / "lego_stereo.json"
    assert len(load_phantom("lego_stereo").markers) == 24
    (tmp_path / "torso.json").write_text("{}")  # a user's own file of that name wins
    assert resolve_phantom("torso.json").resolve() == tmp_path / "torso.json"
    with pytest.raises(FileNotFoundError, match="built-in: lego_cube, lego_stereo, torso"):
        resolve_phantom("nothing")
    with pytest.raises(FileNotFoundError):
        load_phantom("sub/lego_stereo.json")  # a path is a path, never a built-in


def test_miss_warning_names_the_rigs_view():
    vol = Volume.from_numpy(np.ones((4, 4, 4), np.float32), spacing=(5, 5, 5), origin=(-7.5, -7.5, -7.5))
    rig = StereoRig.convergent(5.0, 750, 1200, 4.0, 8, 8)
    away = Camera.look_at([0, -750, 0], [0, 0, 5000], sdd=1200, pixel_spacing=4.0, width=8, height=8)
    cams = {"front": rig["left"], "away": away}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render_rig(vol, cams)
    misses = [str(w.message) for w in caught if issubclass(w.category, RaysMissWarning)]
    assert misses == ["view 'away': no ray of this camera meets the volume's box; the view renders as zeros"]

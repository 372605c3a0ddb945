"""The built wheel, installed in a fresh virtual environment, runs its demo from an empty folder.

The wheel is built from this checkout without build isolation (no network), installed with
``--no-deps`` into a new venv, which then takes its dependencies from the test environment's
site-packages (a ``.pth`` line, which adds the folder but not the ``.pth`` files inside it, so
the test environment's own -- possibly editable -- stereodrr stays invisible). The checks:
the package imported is the installed one, it ships its phantom definitions and ``py.typed``,
it requires numba without an extra and renders with the fused CPU backend by default, and ``stereodrr demo`` and ``stereodrr phantom lego_stereo`` run in a folder with nothing in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(env_dir: Path | None = None) -> dict[str, str]:
    """The environment without the test run's PYTHONPATH (which may point at this checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONIOENCODING"] = "utf-8"  # the demo prints degrees and mu, whatever the locale
    if env_dir is not None:
        env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    leftovers = [p for p in (ROOT / "build", ROOT / "stereodrr.egg-info") if not p.exists()]
    try:
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300,
                               cwd=tmp, env=_clean_env())
    finally:  # setuptools builds in the source tree: remove what it left there
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("stereodrr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "stereodrr/py.typed" in names
    # `pip install stereodrr` with no extras brings numba, the fused CPU renderer (a plain
    # Requires-Dist, not one under `extra == ...`)
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [line for line in zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert any(line.split()[1].startswith("numba") and "extra ==" not in line for line in requires), requires
    assert {f"stereodrr/phantoms/data/{n}.json" for n in ("lego_stereo", "lego_cube", "torso")} <= set(names)
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # ensurepip: offline
    py = env_dir / "bin" / "python"
    # Install first, while the new venv sees nothing else (pip must not find the test
    # environment's stereodrr), then let it see the test environment's dependencies.
    pip = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                         capture_output=True, text=True, timeout=300, env=_clean_env(), cwd=tmp)
    assert pip.returncode == 0, pip.stderr
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_clean_env(env_dir), capture_output=True, encoding="utf-8",
                          errors="replace", timeout=600)


def test_installed_wheel_runs_demo_from_an_empty_folder(installed, tmp_path):
    where = _run(installed, [str(installed / "bin" / "python"), "-c", "import stereodrr; print(stereodrr.__file__)"],
                 tmp_path)
    assert where.returncode == 0 and str(installed) in where.stdout, where.stdout + where.stderr
    version = _run(installed, ["stereodrr", "--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("stereodrr "), version.stdout + version.stderr
    # the default CPU backend of the installed package is the fused (Numba) one, not torch's
    backend = _run(installed, [str(installed / "bin" / "python"), "-c",
                               "import torch; from stereodrr.render.backends import select_backend; "
                               "print(select_backend('auto', torch.device('cpu'), torch.float32, 'auto').name)"],
                   tmp_path)
    assert backend.returncode == 0 and backend.stdout.strip() == "numba", backend.stdout + backend.stderr
    work = tmp_path / "empty"
    work.mkdir()
    demo = _run(installed, ["stereodrr", "demo", "-o", "out", "--no-noise", "--pixel", "0.6", "--size", "256", "256"],
                work)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert (work / "out" / "report.json").is_file() and (work / "out" / "rig.json").is_file()
    ph = _run(installed, ["stereodrr", "phantom", "lego_stereo", "--spacing", "2", "--supersample", "1", "-o", "ph"],
              work)
    assert ph.returncode == 0, ph.stderr[-2000:]
    assert (work / "ph" / "mu.mha").is_file() and (work / "ph" / "markers.csv").is_file()

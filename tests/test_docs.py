"""Docs that cannot rot: every public name has a docstring and an entry in the API reference,
and the site builds with ``mkdocs build --strict`` (a broken link, a missing snippet or a
docstring mkdocstrings cannot read fails).

The public names are those in the ``__all__`` of ``stereodrr`` and of each of its sub-packages
and modules. Functions and classes are checked at runtime; constants and type aliases, which
hold no docstring at runtime, through griffe (the static reader mkdocstrings uses): their
docstring is the string literal under the assignment.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import stereodrr

ROOT = Path(__file__).resolve().parents[1]
# The API reference page of each public module (docs/api/<page>.md).
API_PAGES = {
    "stereodrr.geometry": "geometry", "stereodrr.volume": "volume", "stereodrr.phantoms": "phantoms",
    "stereodrr.physics": "physics", "stereodrr.render": "render", "stereodrr.imaging": "imaging", "stereodrr.calib": "calib",
    "stereodrr.registration": "registration", "stereodrr.dataset": "dataset", "stereodrr.interop": "interop",
    "stereodrr.trial": "trial", "stereodrr.track": "track", "stereodrr.distortion": "distortion",
    "stereodrr.extras": "extras", "stereodrr.resources": "extras",
}


def public_modules() -> dict[str, ModuleType]:
    """``stereodrr`` and every direct sub-module or sub-package that declares ``__all__``."""
    out = {"stereodrr": stereodrr}
    for info in pkgutil.iter_modules(stereodrr.__path__):
        if info.name.startswith("_") or info.name == "cli":  # the console script: its parsers are its docs
            continue
        mod = importlib.import_module(f"stereodrr.{info.name}")
        if hasattr(mod, "__all__"):
            out[mod.__name__] = mod
    return out


def test_every_public_module_has_an_api_page():
    modules = set(public_modules()) - {"stereodrr"}
    assert modules == set(API_PAGES), modules ^ set(API_PAGES)
    for page in set(API_PAGES.values()):
        assert (ROOT / "docs" / "api" / f"{page}.md").is_file(), page


def test_public_functions_and_classes_have_docstrings():
    missing = []
    for name, mod in public_modules().items():
        for n in mod.__all__:
            obj = getattr(mod, n)
            if inspect.isclass(obj):
                doc = obj.__dict__.get("__doc__")  # its own, not inherited from a base class
            elif inspect.isroutine(obj) or inspect.ismodule(obj):
                doc = inspect.getdoc(obj)
            else:
                continue  # data and type aliases: checked statically below
            if not (doc and doc.strip()):
                missing.append(f"{name}.{n}")
    assert not missing, f"public names without a docstring: {missing}"


def test_public_constants_and_aliases_have_docstrings():
    griffe = pytest.importorskip("griffe")  # the docs extra (make setup installs it)
    package = griffe.load("stereodrr", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)
    missing = []
    for name, mod in public_modules().items():
        node = package if name == "stereodrr" else package[name.removeprefix("stereodrr.")]
        for n in mod.__all__:
            if n == "__version__" or inspect.isclass(getattr(mod, n)) or inspect.isroutine(getattr(mod, n)) \
                    or inspect.ismodule(getattr(mod, n)):
                continue
            member = node.members.get(n)
            if member is None:  # a lazily exported name of the top level
                continue
            target = member.final_target if member.is_alias else member
            if not (target.docstring and target.docstring.value.strip()):
                missing.append(f"{name}.{n}")
    assert not missing, f"public constants without a docstring (a string literal under the assignment): {missing}"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install 'stereodrr[docs]')")
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return out


def test_mkdocs_build_strict(site):
    assert (site / "index.html").is_file() and (site / "tutorials" / "calibrate" / "index.html").is_file()
    # the tutorial pages include their scripts (pymdownx.snippets)
    assert "render_calibration_images" in (site / "tutorials" / "calibrate" / "index.html").read_text()


def test_every_public_name_has_a_reference_entry(site):
    missing = []
    for name, page in API_PAGES.items():
        ids = set(re.findall(r'id="([^"]+)"', (site / "api" / page / "index.html").read_text()))
        for n in importlib.import_module(name).__all__:
            # a function named like its module (voxelize.voxelize) is documented under its full path
            if f"{name}.{n}" not in ids and not any(i.endswith(f".{n}.{n}") for i in ids):
                missing.append(f"{name}.{n}")
    index = (site / "api" / "index.html").read_text()
    missing += [f"stereodrr.{n}" for n in stereodrr.__all__ if n != "__version__" and f"<code>{n}</code>" not in index]
    assert not missing, f"public names without an API reference entry: {missing}"

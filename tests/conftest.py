"""Shared fixtures; and the run-time check of annotations.

Every function of the packages in ``CHECKED`` runs under jaxtyping's shape checks with beartype
(the ``test`` extra installs it): a tensor whose shape or dtype contradicts the annotation
(``Float[Tensor, "B 3 3"]``) or an argument of the wrong type fails the test that passed it.
The hook must be installed before stereodrr is imported, so it comes first here.
"""

from jaxtyping import install_import_hook

import tests._typecheck  # noqa: F401  (the hook finds the checker by its dotted name)

CHECKED = ("stereodrr.imaging", "stereodrr.physics", "stereodrr.registration", "stereodrr.render.drr", "stereodrr.render.markers",
           "stereodrr.render.projector", "stereodrr.render.aperture")
_hook = install_import_hook(CHECKED, "tests._typecheck.typechecker")

import locale  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from stereodrr.geometry import rotvec_to_matrix  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_locale():
    """Put the C locale back after each test: SimpleITK's DICOM writer (GDCM) sets it to "C",
    and Python's text files then default to ASCII for the rest of the run (a later test reading
    UTF-8 text without an encoding failed, depending on the order the tests ran in)."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != saved:
        locale.setlocale(locale.LC_ALL, saved)


@pytest.fixture
def unchecked():
    """The run-time annotation checks off, for a test of a public function's own ``ValueError`` on
    a value its annotation already rules out (a ``Literal`` choice misspelt, say)."""
    import jaxtyping

    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return rotvec_to_matrix(v / np.linalg.norm(v) * rng.uniform(0.1, 3.0))

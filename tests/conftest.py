import numpy as np
import pytest

from stereodrr.geometry import rotvec_to_matrix


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return rotvec_to_matrix(v / np.linalg.norm(v) * rng.uniform(0.1, 3.0))

import numpy as np
import pytest

from stereodrr.geometry import StereoRig, epipolar_lines, epipoles, fundamental_from_cameras


@pytest.mark.parametrize("angle", [3.0, 5.0, 90.0])
def test_epipolar_constraint(rng, angle):
    rig = StereoRig.convergent(angle, 750, 1200, 0.3, 512, 512, isocenter=(5, 3, -2)) if angle < 10 else \
        StereoRig.biplanar(750, 1200, 0.3, 512, 512)
    c1, c2 = rig.cameras.values()
    F = fundamental_from_cameras(c1, c2)
    assert np.linalg.matrix_rank(F, tol=1e-10) == 2
    X = rng.uniform(-40, 40, size=(200, 3))
    x1, x2 = c1.project(X)[0], c2.project(X)[0]
    h1, h2 = np.c_[x1, np.ones(len(X))], np.c_[x2, np.ones(len(X))]
    # Algebraic residual is ~0 and the point-to-line distance is ~0 px.
    lines2 = epipolar_lines(F, x1, which=1)
    lines1 = epipolar_lines(F, x2, which=2)
    assert np.abs((lines2 * h2).sum(1)).max() < 1e-8
    assert np.abs((lines1 * h1).sum(1)).max() < 1e-8
    # Epipoles: projections of the other camera's centre.
    e1, e2 = epipoles(F)
    p1 = c1.P @ np.append(c2.center, 1)
    p2 = c2.P @ np.append(c1.center, 1)
    # Parallel homogeneous vectors: the sine of their angle (|a x b| / |a||b|) vanishes; near-parallel
    # views put the epipoles ~1e5 px out, so the cross product scales with both norms.
    assert np.linalg.norm(np.cross(e1, p1)) < 1e-9 * np.linalg.norm(e1) * np.linalg.norm(p1)
    assert np.linalg.norm(np.cross(e2, p2)) < 1e-9 * np.linalg.norm(e2) * np.linalg.norm(p2)


def test_zero_baseline():
    rig = StereoRig.convergent(5, 750, 1200, 0.3, 64, 64)
    with pytest.raises(ValueError, match="share their centre"):
        fundamental_from_cameras(rig["left"], rig["left"])


def test_bad_fundamental_matrix_for_lines():
    """NaN or zero F gave NaN lines and a 2x2 one a matmul error, naming nothing."""
    pts = np.zeros((2, 2))
    for F in (np.full((3, 3), np.nan), np.zeros((3, 3)), np.eye(2)):
        with pytest.raises(ValueError, match="F: expected a finite non-zero 3x3 matrix"):
            epipolar_lines(F, pts)

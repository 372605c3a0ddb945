import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Registration runs many small renders: on a shared 2-core CPU one thread is far faster
    than two competing ones. Restored afterwards for the other test packages."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import numba
    except ImportError:
        numba = None
    nb = numba.get_num_threads() if numba else None
    if numba:
        numba.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    if numba:
        numba.set_num_threads(nb)

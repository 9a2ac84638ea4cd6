import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The models in the tests are small: on a 2-core machine one torch thread is faster than two
    (and several times faster when anything else is running)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model is faster on one thread, and far faster on a loaded machine (no oversubscription)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)

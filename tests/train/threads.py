"""`one_thread()`: run a block with one torch CPU thread.

Small networks on a busy shared CPU run several times faster with one thread than with two threads
waiting for each other, and training figures stated in tests are exact for one thread (the reduction
order, and so the last bits, change with the thread count).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

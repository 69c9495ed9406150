"""Shared by the benchmarks: broadcasting without a polling rank."""

import time


def idle_bcast(comm, value):
    """Broadcast rank 0's ``value``; the other ranks wait asleep, not polling a core.

    While rank 0 times a one-rank build, a rank blocked in ``bcast`` busy-polls (MPICH) and
    takes the second core's time slices and memory bandwidth on a small machine.
    """
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.005)
    return comm.bcast(value, root=0)

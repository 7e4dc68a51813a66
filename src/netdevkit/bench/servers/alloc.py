"""Put glibc's allocator in one known state before a server serves.

asyncio's socket transport reads into a fresh 256 KiB buffer on every readable event and
shrinks it to the bytes received. Whether glibc serves that buffer from the heap or from a
new ``mmap`` depends on its *dynamic* mmap threshold: it starts at 128 KiB and rises to the
size of the largest ``mmap``-ed block the process has freed so far. So the same server code
takes one of two paths, decided by what happened to be allocated while its modules were
imported:

- threshold raised above 256 KiB: the buffer comes from the heap, no system call;
- threshold still at 128 KiB: ``mmap`` + ``mremap`` + ``munmap`` and two page faults on every
  request.

The bench's stock-asyncio reference server went from one path to the other when its module
moved (same code, another import history) and measured 1.2-1.5x slower. :func:`settle_malloc`
frees one 512 KiB block, which raises the threshold the way any long-running process raises
it, so every server the bench starts takes the heap path whatever it imported.
"""

from __future__ import annotations

__all__ = ["SETTLE_BYTES", "settle_malloc"]

#: The block freed: above asyncio's 256 KiB read buffer, so that buffer's size stays under
#: the raised threshold (and the trim threshold glibc sets to twice it).
SETTLE_BYTES = 512 * 1024


def settle_malloc() -> None:
    """Raise glibc's dynamic mmap threshold above asyncio's read buffer (see the module doc).

    Allocating a block above the initial threshold gets it ``mmap``-ed; freeing it sets the
    threshold to its size. Harmless where the allocator is not glibc's.
    """
    block = bytearray(SETTLE_BYTES)
    del block

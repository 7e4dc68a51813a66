"""The loops behind ``netdevkit devmem recv`` and ``send`` (what ncdevmem does), without I/O setup.

:func:`receive` drains a :class:`~.rx.DevmemReceiver` until the peer closes
(or *limit* bytes), counting fragments, linear chunks and bytes, and checks
every byte against a repeating pattern when asked: byte *k* of the stream
must be ``k % pattern`` (``pattern`` from 1 to 256). :func:`send` streams a
dmabuf filled with the same pattern (:func:`fill_pattern`) through a
:class:`~.tx.DevmemSender` and waits for the zerocopy completions.
The CLI wires them to real sockets and bindings; tests drive them with the
fake kernel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import RequestError

# Defined in errors.py; importable from here as before.
from ..errors import ValidationError as ValidationError  # noqa: PLC0414
from .dmabuf import DMA_BUF_SYNC_END, DMA_BUF_SYNC_READ, DMA_BUF_SYNC_START
from .rx import DevmemReceiver, Fragment, RxBatch, Source
from .tx import DevmemSender


@dataclass(frozen=True, slots=True)
class RecvReport:
    bytes: int
    frags: int
    linear_chunks: int
    readable_bytes: int
    seconds: float
    validated: bool

    @property
    def gbit_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SendReport:
    bytes: int
    sends: int
    seconds: float
    completions_pending: int
    copied: bool

    @property
    def gbit_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e9 if self.seconds > 0 else 0.0


def check_pattern(pattern: int | None) -> None:
    if pattern is not None and not 1 <= pattern <= 256:
        raise RequestError(f"{pattern} is not a pattern length from 1 to 256")


def _expected(pos: int, n: int, pattern: int) -> npt.NDArray[np.uint8]:
    return (np.arange(pos, pos + n, dtype=np.int64) % pattern).astype(np.uint8)


def _validate(data: bytes | memoryview, pos: int, pattern: int) -> None:
    got = np.frombuffer(data, np.uint8)
    bad = np.flatnonzero(got != _expected(pos, len(got), pattern))
    if len(bad):
        k = int(bad[0])
        raise ValidationError(
            f"stream byte {pos + k} is {int(got[k])}, expected {(pos + k) % pattern} "
            f"(pattern length {pattern})"
        )


def receive(
    rx: DevmemReceiver,
    source: Source | None = None,
    *,
    pattern: int | None = None,
    limit: int | None = None,
) -> RecvReport:
    """Receive until the peer closes (or *limit* bytes); validate against *pattern*."""
    check_pattern(pattern)
    if pattern is not None and source is None:
        raise RequestError("validation reads fragments through the dmabuf: it needs a source")
    start = time.monotonic()
    pos = 0
    sync = getattr(source, "sync", None)  # a udmabuf brackets CPU reads with DMA_BUF_IOCTL_SYNC
    for batch in rx:
        if pattern is not None:
            assert source is not None
            if sync is not None:
                sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ)
            try:
                _validate_batch(batch, source, pos, pattern)
            finally:
                if sync is not None:
                    sync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ)
            pos += batch.nbytes
        if limit is not None and rx.stats().bytes >= limit:
            break
    s = rx.stats()
    return RecvReport(
        s.bytes,
        s.frags,
        s.linear_chunks,
        s.readable_bytes,
        time.monotonic() - start,
        pattern is not None,
    )


def _validate_batch(batch: RxBatch, source: Source, pos: int, pattern: int) -> None:
    for chunk in batch.chunks():
        if isinstance(chunk, Fragment):
            _validate(source.view(chunk.offset, chunk.size), pos, pattern)
            pos += chunk.size
        else:
            _validate(chunk, pos, pattern)
            pos += len(chunk)


def fill_pattern(view: memoryview, pattern: int) -> None:
    """Write the repeating pattern (byte *k* = ``k % pattern``) over *view*."""
    check_pattern(pattern)
    view[:] = _expected(0, len(view), pattern).tobytes()


def send(
    tx: DevmemSender,
    dmabuf_size: int,
    total: int,
    *,
    chunk: int = 64 * 1024,
    pattern: int = 256,
    wait_s: float = 5.0,
) -> SendReport:
    """Send *total* bytes of the pattern-filled dmabuf, cycling through it.

    Each send starts where the stream is in the pattern, so a receiver
    validating with the same *pattern* sees one continuous sequence.
    """
    if chunk <= 0 or total < 0:
        raise RequestError("chunk must be positive and total not negative")
    period = dmabuf_size - dmabuf_size % pattern
    if period <= 0:
        raise RequestError(f"the dmabuf ({dmabuf_size} bytes) is smaller than the pattern")
    start = time.monotonic()
    sent = sends = 0
    while sent < total:
        off = sent % period
        n = min(chunk, total - sent, period - off)
        s = tx.send((off, n))
        sends += 1
        sent += s.sent
        tx.poll_completions()
    tx.wait_all(wait_s)
    return SendReport(sent, sends, time.monotonic() - start, len(tx.inflight), tx.copied)

"""The servers ``netdevkit bench`` measures, each runnable with ``python -m``.

- :mod:`.rr` - a request/response server speaking sockperf's TCP framing on stock asyncio,
  netdevkit's busy-polling loop, uvloop or :class:`~netdevkit.busypoll.fastloop.FastLoop`.
- :mod:`.threads` - the same with a thread per connection and blocking, busy-polling reads.
- :mod:`.napiecho` - an echo / sockperf server on :class:`~netdevkit.dispatch.NapiDispatcher`.
- :mod:`.stockecho` - :mod:`.napiecho`'s handler on stock asyncio or uvloop.
- :mod:`.alloc` - :func:`~.alloc.settle_malloc`, which every server's ``main`` calls first so
  that stock asyncio's read buffer comes from the heap whatever the server imported.
"""

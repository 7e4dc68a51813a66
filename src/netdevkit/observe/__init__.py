"""Watching NAPIs, queues and busy polling live: the data behind ``netdevkit
top``, ``monitor``, ``qstats balance`` and ``exporter``.

- :mod:`.sources`: one read of everything (qstats, rtnetlink link counters,
  ethtool per-queue counters, NAPIs, page pools, softnet, TcpExt, sysctls,
  epoll contexts netdevkit attached to) into a frozen :class:`Snapshot`;
- :mod:`.rates`: pure rate computation between two snapshots (counter wrap,
  vanished interfaces, renumbered NAPIs);
- :mod:`.balance`: spread of traffic over queues (pure);
- :mod:`.top`: the rows and JSON of ``netdevkit top`` (pure);
- :mod:`.monitor`: netdev notifications with overrun recovery;
- :mod:`.exporter`: the Prometheus collector.
"""

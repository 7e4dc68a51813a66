"""``netdevkit bench``: what each NAPI/busy-poll mode buys, measured on this kernel.

- :mod:`.results` - the typed results model and its versioned JSON form.
- :mod:`.cpu` - CPU accounting from ``/proc`` (process user+system, softirq per CPU).
- :mod:`.sockperf` - Debian's sockperf server and client, output parsed.
- :mod:`.servers` - the servers the bench measures: the sockperf-framing request/response
  server on every loop (:mod:`.servers.rr`, :mod:`.servers.threads`), the per-NAPI
  echo server (:mod:`.servers.napiecho`) and its handler on stock loops
  (:mod:`.servers.stockecho`).
- :mod:`.loadgen` - :mod:`.loadgen.mcload`, an open-loop memcached load generator without
  coordinated omission.
- :mod:`.modes` - the kernel presets and netdevkit's own modes, and where each applies.
- :mod:`.sweep` - the capacity probe and the load sweep's rates.
- :mod:`.paired` - medians over rounds and paired per-round ratios (pure).
- :mod:`.recommend` - the mode meeting a p99 target with least CPU (pure).
- :mod:`.claims` - the IRQ-suspension claims, each at the load it is about (pure).
- :mod:`.compare` - what changed between two runs (pure).
- :mod:`.byo` - ``--server``: the user's own program, and the wrk (HTTP) client.
- :mod:`.table` - the results table's rows and cells (pure).
- :mod:`.report` - writes a run's report files through the renderers: :mod:`.markdown`
  (``report.md``, led by the recommendation), :mod:`.plots` (PNG plots, the trade-off
  picture first); :mod:`.terminal` renders a run on the terminal.
- :mod:`.runner` - probes, then runs rounds of modes x workloads x loads in a testbed (or
  on a NIC) and restores everything.
- :mod:`.site` - where the servers and clients run: the :class:`~.site.Site` protocol a
  testbed satisfies, and :class:`~.site.NicSite` (servers here on a real interface,
  clients on a peer); :mod:`.remote` - the peer over ssh (pre-checks, the wrapper that
  ends every remote process with the run); :mod:`.nic` - the interface's driver,
  firmware, link speed and queue-interrupt CPUs.

Importing this package imports nothing heavy; each module pulls its own dependencies.
"""

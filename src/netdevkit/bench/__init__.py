"""``netdevkit bench``: what each NAPI/busy-poll mode buys, measured on this kernel.

- :mod:`.results` - the typed results model and its versioned JSON form.
- :mod:`.cpu` - CPU accounting from ``/proc`` (process user+system, softirq per CPU).
- :mod:`.sockperf` - Debian's sockperf server and client, output parsed.
- :mod:`.mcload` - an open-loop memcached load generator without coordinated omission.
- :mod:`.report` - terminal table, PNG plots and the Markdown claims report.
- :mod:`.runner` - runs modes x workloads x loads in a testbed and restores everything.

Importing this package imports nothing heavy; each module pulls its own dependencies.
"""

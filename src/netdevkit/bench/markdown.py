"""The Markdown report of a run (``report.md``), led by the recommendation.

Sections: which mode (:mod:`netdevkit.bench.recommend`), this run's setup and the
knee each server was found to have, the noise floor, the claims of the IRQ-suspension work
(:mod:`netdevkit.bench.claims`), the results table (:mod:`netdevkit.bench.table`), how to
read it, what was not measured, and the plots. Pure: text from a
:class:`~netdevkit.bench.results.Results`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .claims import MEASURED_NOT, evaluate_claims
from .recommend import recommend
from .results import Results
from .table import HEADERS, capacity_line, cells, rate_label, rows
from .validity import noise_line, run_warning

__all__ = ["markdown_report"]


def markdown_report(res: Results, plots: Sequence[str] = (), target_us: float | None = None) -> str:
    """The Markdown report: the recommendation first, then setup, capacities, claims
    with verdicts and numbers, the table and caveats."""
    target = target_us or res.config.target_p99_us or 100.0
    lines = ["# netdevkit bench report", ""]
    warning = run_warning(res.samples)
    if warning:
        lines += [f"**{warning}**", ""]
    lines += [f"## Which mode (p99 target {target:g} us)", ""]
    lines += [f"- {r.text}" for r in recommend(res, target)] or ["- no samples in this run"]
    lines += _this_run(res)
    lines += _claims(res)
    lines += ["", "## Results", "", "Medians across rounds, [min-max] when repeated.", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    for r in rows(res):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |")
    lines += _how_to_read(res)
    if res.skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {k.mode} / {k.workload}: {k.reason}" for k in res.skipped]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


def _this_run(res: Results) -> list[str]:
    cfg = res.config
    sweep = ", ".join(f"{f:.0%}" for f in cfg.sweep) or "none"
    lines = [
        "",
        "## This run",
        "",
        f"Kernel {cfg.kernel or '?'}, {cfg.cpus or '?'} CPUs, netdevkit "
        f"{cfg.netdevkit_version or '?'}, started {cfg.started or '?'}; "
        f"modes {', '.join(cfg.modes)}; workloads {', '.join(cfg.workloads)}; "
        f"fixed loads {', '.join(rate_label(x) for x in cfg.loads) or 'none'}; "
        f"sweep {sweep} of each server's knee; {cfg.duration:g} s per sample, "
        f"{cfg.repeat} round(s){' (--quick)' if cfg.quick else ''}; "
        f"CPU placement: {cfg.placement or 'none (the scheduler decides)'}"
        + (f"; --server `{cfg.server_cmd}` driven by {cfg.client}" if cfg.server_cmd else "")
        + ".",
        "",
    ]
    lines += [f"- Where: {cfg.where()}."]
    lines += [f"- {capacity_line(cap)}" for cap in res.capacities]
    if res.noise_floor is not None:
        lines.append(f"- {noise_line(res.noise_floor)}")
    if cfg.work_us:
        lines.append(f"- the echo `fast` server did {cfg.work_us} us of CPU work per request")
    return lines


def _claims(res: Results) -> list[str]:
    lines = [
        "",
        "## Claims of the IRQ-suspension work, each at the load it is about",
        "",
        "| claim | workload | verdict | judged at | numbers |",
        "|---|---|---|---|---|",
    ]
    for c in evaluate_claims(res):
        lines.append(
            f"| ({c.key}) {c.title} | {c.workload}/{c.server} | **{c.verdict}** | "
            f"{c.load or '-'} | {c.evidence} |"
        )
    if not res.samples:
        lines.append(f"| (all) | - | **{MEASURED_NOT}** | - | no samples in this run |")
    return lines


def _how_to_read(res: Results) -> list[str]:
    lines = ["", "## How to read this", ""]
    kinds = {s.latency.kind for s in res.samples}
    if "half-rtt" in kinds:
        lines.append(
            "- sockperf and echo latencies are **half the round trip**, as sockperf reports them."
        )
    if "rtt" in kinds:
        lines.append(
            "- memcached and redis latencies are whole round trips. Every open-loop latency is "
            "measured from the request's intended send time (no coordinated omission) by one "
            "spinning client thread (`netdevkit.bench.loadgen.openloop`)."
        )
    lines += [
        "- *load* is what was asked for; *achieved/s* is what the server answered. "
        "Samples whose load generator could not keep up are flagged client-limited and count "
        "for no claim.",
        "- *CPU* is the server's: the scheduler's runtime (schedstat) of every thread of the "
        "server process tree plus, in threaded modes, of the NAPI kthread that polls for it; "
        "softirq is summed over all CPUs (on veth the sender's napi_schedule raises it, so it "
        "includes the client side).",
        "- A sample marked *disturbed* had another task on the server's or client's CPUs, "
        "steal time, a server waiting for its CPU, a load generator that did not get its "
        "core, or a busy-polling mode that did not spin (rules: `netdevkit.bench.validity`); "
        "no claim or recommendation uses it.",
        "- *sleeps/s*: the server's voluntary context switches (it blocked, e.g. in epoll_wait "
        "after a busy poll found nothing); *busy-polled %*: share of the packets received in "
        "the server namespace that busy polling delivered (TcpExt BusyPollRxPackets / Ip "
        "InReceives).",
        "- This machine's veth has no hardware IRQs: deferral and suspension hold back the "
        "sender's napi_schedule instead. Client, server and softirq share the same few cores, "
        "so CPU numbers are upper bounds compared with a dedicated-core setup.",
    ]
    return lines

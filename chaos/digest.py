"""The few lines a person reads first after a chaos run (printed to stderr; the JSON report goes
to stdout): the verdict, the faults per kind, availability per kind against its target, and what
a failover lost."""

from __future__ import annotations

from typing import Any


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(report: dict[str, Any]) -> str:
    run = report.get("run", {})
    lines = [f"chaos run seed {run.get('seed')}: {'VALID' if report['valid'] else 'INVALID'}"
             f" ({run.get('wall_s')} s wall; replay: {run.get('replay')})"]
    lines += [f"  broken invariant {name}: {v['count']} (first: {v['counterexamples'][:1]})"
              for name, v in report["invariants"].items() if not v["ok"]]
    faults = report["figures"]["faults"]
    lines.append(f"  faults ({report['figures']['faults_total']}): "
                 + ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())))
    available = report["availability"]
    lines.append("  availability, seconds from a fault until jobs start again"
                 " (count, p50, max, never; worst wait while it lasted):")
    for kind, s in available["per_kind"].items():
        target = available["targets"].get(kind)
        verdict = "" if target is None else f"   target {target['target_s']:g} s: {'met' if target['met'] else 'MISSED'}"
        lines.append(f"    {kind:<18} {s['count']:>4}  {_seconds(s['p50']):>8}  {_seconds(s['max']):>8}  {s['never']}"
                     f"  {_seconds(s.get('worst_during_max')):>8}{verdict}")
    promoted = available.get("postgres_after_promotion")
    if promoted:
        lines.append(f"    {'(after promotion)':<18} {promoted['count']:>4}  {_seconds(promoted['p50']):>8}"
                     f"  {_seconds(promoted['max']):>8}  {promoted['never']}")
    lost = report["replication"]
    if lost["failovers"]:
        lines.append(f"  replication ({lost.get('standby')} standby), {lost['failovers']} failovers:"
                     f" enqueues lost {lost['enqueues_lost']['count']} of {lost['enqueues_returned']} returned;"
                     f" outcomes run again {lost['outcomes_run_again']['count']}"
                     f" ({lost['outcomes_run_again']['of_which_acked_before']} acked before the failover)")
    return "\n".join(lines)

"""``chronoq bench plot``: lateness p50 / p99 / max against offered rate, from the JSON files
that ``chronoq bench steady`` writes (files or folders of them), one line per percentile and
handler mode, medians where a rate was run more than once. Needs matplotlib, the ``bench``
extra (``pip install 'chronoq[bench]'``); it is imported only here, only when plotting."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

PERCENTILES = (("lateness_p50_ms", "p50", "-"), ("lateness_p99_ms", "p99", "--"), ("lateness_max_ms", "max", ":"))
COLOURS = {"noop": "tab:blue", "db": "tab:orange"}


def _files(inputs: list[str]) -> list[Path]:
    found: list[Path] = []
    for name in inputs:
        path = Path(name)
        found += sorted(path.glob("*.json")) if path.is_dir() else [path]
    return found


def collect(inputs: list[str]) -> tuple[dict[str, dict[float, list[dict[str, Any]]]], dict[str, Any]]:
    """Steady runs by handler mode and offered rate, and the environment of the last file."""
    by_mode: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    environment: dict[str, Any] = {}
    for path in _files(inputs):
        document = orjson.loads(path.read_bytes())
        if document.get("scenario") != "steady":
            continue
        environment = document.get("environment", environment)
        for run in document["runs"]:
            if run.get("offered_rate") is not None:
                by_mode[run["mode"]][float(run["offered_rate"])].append(run)
    return by_mode, environment


def points(runs_by_rate: dict[float, list[dict[str, Any]]], key: str) -> tuple[list[float], list[float]]:
    rates = sorted(runs_by_rate)
    # float(): steady writes lateness_max_ms as Postgres numeric, which the JSON holds as a string
    return rates, [statistics.median(float(r[key]) for r in runs_by_rate[rate]) for rate in rates]


def plot(inputs: list[str], output: Path) -> Path:
    by_mode, environment = collect(inputs)
    if not by_mode:
        raise ValueError(f"no steady results in {', '.join(inputs) or 'the given paths'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install 'chronoq[bench]'") from exc
    figure, axes = plt.subplots(figsize=(8, 5), dpi=120)
    for mode, runs_by_rate in sorted(by_mode.items()):
        for key, label, style in PERCENTILES:
            rates, values = points(runs_by_rate, key)
            axes.plot(rates, values, style, marker="o", markersize=4, color=COLOURS.get(mode),
                      label=f"{label}, {mode} handler")
    machine = environment.get("machine", {})
    axes.set_title(f"chronoq lateness vs offered rate ({machine.get('cpus', '?')} CPUs, "
                   f"Postgres {str(environment.get('postgres', '?')).split()[0]})")
    axes.set_xlabel("offered rate (jobs/s)")
    axes.set_ylabel("lateness: handler start - due time (ms)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(output)
    plt.close(figure)
    return output

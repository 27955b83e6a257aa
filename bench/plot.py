"""The whole-pipeline run at 70% as a PNG: throughput, delays and lag over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the file is the output

import matplotlib.pyplot as plt  # the backend is chosen before pyplot loads


def render(seventy: dict[str, Any], path: Path) -> None:
    line = seventy["timeline"]
    seconds = list(range(line["seconds"]))
    started = seventy["started"]
    figure, (rates, delays, lag) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, constrained_layout=True
    )
    figure.suptitle(
        f"Whole pipeline at {seventy['rate']:,.0f} votes/s offered (70% of the sustained rate),"
        " each consumer stopped for a while in turn"
    )
    for outage in seventy["outages"]:
        stop = outage["stopped_at"] - started
        back = (outage["caught_up_at"] or outage["restarted_at"]) - started
        for axis in (rates, delays, lag):
            axis.axvspan(stop, outage["restarted_at"] - started, color="0.85")
            axis.axvspan(outage["restarted_at"] - started, back, color="0.93")
        rates.text(stop + 1, 0, f"{outage['consumer']} stopped", rotation=90, va="bottom")

    rates.plot(seconds, line["answered"], label="ingest: 202 answers /s", linewidth=1)
    rates.plot(seconds, line["decided"], label="antifraud: decided /s", linewidth=1)
    rates.plot(seconds, line["counted"], label="tally: counted /s", linewidth=1)
    rates.set_ylabel("votes per second")
    rates.legend(loc="upper right", fontsize="small")
    rates.grid(alpha=0.3)

    for key, label in (
        ("decision_p50", "decision delay p50"),
        ("decision_p99", "decision delay p99"),
        ("count_p50", "count delay p50"),
        ("count_p99", "count delay p99"),
    ):
        # Seconds without votes are nan: gaps in the line, not zeros.
        delays.plot(seconds, line[key], label=label, linewidth=1)
    delays.set_yscale("log")
    delays.set_ylabel("seconds from received_at\n(by second received)")
    delays.axhline(1.0, color="red", linestyle=":", linewidth=0.8)
    delays.axhline(2.0, color="darkred", linestyle=":", linewidth=0.8)
    delays.legend(loc="upper right", fontsize="small")
    delays.grid(alpha=0.3, which="both")

    times = [sample["t"] for sample in line["lag"]]
    for consumer in ("antifraud", "tally", "lottery"):
        lag.plot(times, [s.get(consumer, 0) for s in line["lag"]], label=consumer, linewidth=1)
    lag.set_ylabel("consumer lag (records)")
    lag.set_xlabel("seconds since the load started (grey: stopped, light grey: catching up)")
    lag.legend(loc="upper right", fontsize="small")
    lag.grid(alpha=0.3)

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)

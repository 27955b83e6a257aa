"""Writes docs/benchmarks.md from one run's results: only figures measured in that run."""

from __future__ import annotations

from typing import Any

from bench import report_pipeline
from bench.markdown import cell, table

Results = dict[str, Any]

TARGETS = {"ingest": 0.5, "antifraud": 0.3, "tally": 0.5}


def _ratio_line(name: str, ratio: float | None, qualifier: str = "") -> str:
    target = TARGETS[name]
    if ratio is None:
        return f"| {name} | - | >= {target}x | not measured |"
    met = "met" if ratio >= target else "**missed**"
    return f"| {name} | {ratio:.3f}x{qualifier} | >= {target}x | {met} |"


def _machine(results: Results) -> list[str]:
    m = results["machine"]
    load = ", ".join(str(x) for x in m["load_average_at_start"])
    return [
        "## Machine",
        "",
        f"- {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}",
        f"- Python {m['python']}, Apache Kafka {m['kafka']} (single KRaft node), "
        f"PostgreSQL {m['postgres']}; aiokafka C extension loaded: "
        f"{'yes' if m['aiokafka_c_extension'] else 'no'}",
        f"- Where: {results['where']}",
        f"- Load average when the run started: {load}. The load generator, the servers, "
        "Kafka and Postgres all share these cores, so absolute figures are this "
        "machine's; the ratios compare runs made minutes apart on it.",
        "",
    ]


def _summary(results: Results) -> list[str]:
    lines = ["## Ratios against the baselines", "", "| part | measured | target | |"]
    lines.append("|---|---|---|---|")
    ingest = results.get("ingest")
    if ingest is not None:
        qualifier = " (upper bound)" if ingest["bare"]["ceiling_generator_limited"] else ""
        lines.append(_ratio_line("ingest", ingest["ratio"], qualifier))
    else:
        lines.append(_ratio_line("ingest", None))
    for name in ("antifraud", "tally"):
        part = results.get(name)
        lines.append(_ratio_line(name, part["ratio"] if part and "ratio" in part else None))
    if results.get("pipeline"):
        for row in report_pipeline.targets(results["pipeline"]):
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _search_rows(search: Results) -> list[list[Any]]:
    return [
        [
            step["rate"],
            step["completed_rate"],
            step["p50_ms"],
            step["p99_ms"],
            step["p999_ms"],
            f"{step['errors']:.2%}",
            step["server_cpu_ms_per_request"],
            step["dispatch_lag_p99_ms"],
            "yes" if step["held"] else f"no ({step['why']})",
        ]
        for step in search["steps"]
    ]


_STEP_HEADER = (
    "offered /s",
    "answered /s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "5xx+no answer",
    "server CPU ms/req",
    "generator lag p99 ms",
    "held",
)


def _ingest(part: Results) -> list[str]:
    ingest, bare = part["ingest"], part["bare"]
    lines = ["## Ingest: votes per second through `POST /api/v1/polls/{poll}/votes`", ""]
    rows = []
    for name, search in (("vote_ingest", ingest), ("bare endpoint", bare)):
        at70 = search["at_70"] or {}
        rows.append(
            [
                name,
                search["max_rate"],
                at70.get("rate"),
                at70.get("p50_ms"),
                at70.get("p99_ms"),
                at70.get("p999_ms"),
                at70.get("server_cpu_ms_per_request"),
                at70.get("dispatch_lag_p99_ms"),
                "yes" if at70.get("held") else f"no ({at70.get('why', 'not run')})",
            ]
        )
    header = (
        "server",
        "max sustained /s",
        "70% /s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "CPU ms/req",
        "generator lag p99 ms",
        "70% run held",
    )
    lines += table(header, rows)
    ratio = part["ratio"]
    lines += ["", f"Ratio of maximum sustained rates, ingest / bare: **{cell(ratio, 3)}x**."]
    if bare["ceiling_generator_limited"]:
        lines.append(
            "The bare endpoint's search ended where the load generator itself fell behind "
            "its schedule (its dispatch lag passed 20 ms at p99), so the bare maximum is a "
            "lower bound and this ratio an upper bound."
        )
    if ratio is not None and ratio < TARGETS["ingest"]:
        lines.append(f"The target of {TARGETS['ingest']}x is **missed**.")
    lines += _floor(part)
    rule = part["rule"]
    lines += [
        "",
        f"A step holds when at most {rule['max_error_fraction']:.0%} of votes got a 5xx or "
        f"no answer, p99 <= {rule['max_p99_ms']:.0f} ms and answers kept pace with at "
        f"least {rule['min_completion']:.0%} of the offered rate. Steps of "
        f"{part['plan']['step_seconds']:.0f} s, x{part['plan']['factor']} each, then "
        f"{part['plan']['refine_steps']} bisection steps; a failed step is retried once; "
        f"the 70% run lasts {part['plan']['measure_seconds']:.0f} s.",
        "",
    ]
    for name, search in (("vote_ingest", ingest), ("bare endpoint", bare)):
        lines += [f"Steps, {name}:", ""]
        lines += table(_STEP_HEADER, _search_rows(search))
        lines.append("")
    return lines


def _cpu_us(search: Results) -> float | None:
    cpu = (search.get("at_70") or {}).get("server_cpu_ms_per_request")
    return None if cpu is None else cpu * 1000


def _floor(part: Results) -> list[str]:
    """The pieces every vote needs, against the CPU per vote the target leaves."""
    found = part.get("floor")
    http = _cpu_us(part["bare"])
    if not found or http is None:
        return []
    target = TARGETS["ingest"]
    budget = 1e6 / found["rate"]
    pieces = [
        ("the HTTP stack (the bare endpoint's CPU per request at 70%)", http),
        ("verifying a voter token not seen before (PyJWT, HS256)", found["token_check_us"]),
        (
            f"one send to Kafka as the edge makes it, {found['rate']:,.0f} a second "
            "(acks=all, less its task's scheduling)",
            found["send_us"],
        ),
    ]
    together = sum(us for _, us in pieces)
    rows: list[list[Any]] = [[what, us] for what, us in pieces]
    rows += [["together", together], [f"budget per vote at {target}x", budget]]
    lines = [
        "",
        f"### What {target}x asks of the edge",
        "",
        f"{target}x of the bare endpoint's maximum is {found['rate']:,.0f} votes/s: "
        f"{budget:.0f} µs of CPU per vote for the edge's one process. What every vote "
        "costs at the least, measured in this run (`bench/floor.py`):",
        "",
        *table(("piece every vote needs", "CPU µs per vote"), rows),
        "",
    ]
    own = _cpu_us(part["ingest"])
    own_text = "" if own is None else f" (vote_ingest's CPU per vote at 70%: {own:.0f} µs)"
    if together > budget:
        lines.append(
            "These alone take more than the budget, before the edge parses and validates "
            "the body, builds and serialises the event, answers and writes its metrics and "
            f"log{own_text}: on this HTTP stack, JWT library and Kafka client the target "
            "is out of reach on this machine."
        )
    else:
        lines.append(
            f"They leave {budget - together:.0f} µs per vote for everything else the edge "
            f"does{own_text}."
        )
    if found["send_failures"]:
        lines.append(f"{found['send_failures']} of the {found['sends']:,} sends failed.")
    return lines


CAPTCHA_TRADE_OFF = """\
The trade-off (see `shared/captcha.py`): every vote needs a fresh image, so issuance
costs one render per vote however it is arranged. The service renders a smaller image
than the library's stock one (120x44, PNG level 1), about 1.65x cheaper, and keeps a
pool of pre-rendered `(id, image)` pairs filled by a worker process, so a request pops a
ready pair instead of rendering on the event loop. A pooled captcha is issued when it is
rendered and handed out at most once, only while at least 80% of its five minutes is
left: answers stay unguessable (HMAC of the id) and ids single-use, at the price of
re-rendering stock that ages out when idle (about the pool's size per minute). The pool
absorbs bursts (its capacity); sustained issuance is bounded by the render workers, so
keeping up with a higher vote rate means more render workers or more ingest replicas -
ids and answers need no shared state, so both scale out freely."""


def _captcha(part: Results, ingest: Results | None) -> list[str]:
    lines = ["## Captcha issuance: `POST /api/v1/captcha`", ""]
    rows = [
        ["render alone, one core", f"{part['render_ms']:.2f} ms", part["renders_per_core_second"]],
        [
            "through the API, sustained after the stock is drained",
            f"{part['issued_per_second']:,.1f} /s",
            part["issued_per_cpu_second"],
        ],
    ]
    lines += table(("measure", "cost or rate", "captchas per CPU second"), rows)
    pct = part["latency_ms"]
    lines += [
        "",
        f"{part['concurrency']} clients back to back for {part['seconds']:.0f} s: "
        f"{part['issued']:,} captchas, the service's processes used "
        f"{part['server_cpu_seconds']:.1f} CPU s; latency p50 {cell(pct.get('50.0'))} ms, "
        f"p99 {cell(pct.get('99.0'))} ms. Statuses: {part['statuses']}.",
    ]
    if ingest and ingest["ingest"]["max_rate"]:
        votes = ingest["ingest"]["max_rate"]
        per_core = part["issued_per_cpu_second"]
        lines += [
            "",
            f"Against the vote path: ingest sustained {votes:,.0f} votes/s; captchas are "
            f"issued at {part['issued_per_second']:,.0f}/s ({per_core:,.0f} per CPU second). "
            + (
                "Issuance is the tighter limit of the voter's path."
                if part["issued_per_second"] < votes
                else "Issuance keeps up with the vote rate on this machine."
            ),
        ]
    lines += ["", CAPTCHA_TRADE_OFF, ""]
    return lines


def _runs(run: Results) -> str:
    """The rates of every repetition of a short run (the fastest is the row's figure)."""
    rates = run.get("runs")
    return " / ".join(f"{rate:,.0f}" for rate in rates) if rates else "one run"


def _catchup(name: str, part: Results) -> list[str]:
    title = {"antifraud": "votes.submitted", "tally": "votes.accepted"}[name]
    lines = [f"## {name.capitalize()} catch-up: a backlog of {part['backlog']:,} on {title}", ""]
    rows = [
        [
            part["bare"]["consumer"],
            part["bare"]["rate"],
            part["bare"]["seconds"],
            part["bare"]["total_seconds"],
        ],
        [
            f"{name} consumer",
            part["consumer"]["rate"],
            part["consumer"]["seconds"],
            part["consumer"]["total_seconds"],
        ],
    ]
    decoding = part.get("decoding")
    if decoding:
        rows.insert(
            1,
            [
                f"{decoding['consumer']} (diagnostic)",
                decoding["rate"],
                decoding["seconds"],
                decoding["total_seconds"],
            ],
        )
    runs = [part["bare"], *([decoding] if decoding else []), part["consumer"]]
    for row, run in zip(rows, runs, strict=True):
        row.append(_runs(run))
    header = ("consumer", "records/s", "s after first batch", "s from start", "every run, /s")
    lines += table(header, rows)
    target = TARGETS[name]
    verdict = "met" if part["ratio"] >= target else "**missed**"
    lines += [
        "",
        f"Ratio: **{part['ratio']:.3f}x** the bare consumer (target >= {target}x: {verdict}). "
        f"The backlog was written at {part['produce_rate']:,.0f} records/s. "
        f"Checks after the run: {part['checks']}.",
        "",
    ]
    if decoding:
        lines += [
            "The diagnostic row is the bare read plus decoding each record into its event "
            "model: the part of the gap that decoding alone explains. The ratio is against "
            "the bare read.",
            "",
        ]
    return lines


def _statements(levels: list[Results], own_database: bool) -> list[str]:
    others = (
        "nothing else uses this database during the run"
        if own_database
        else "this database was shared with other work, whose commits would be counted too"
    )
    lines = [
        "### Tally: Postgres statements per vote",
        "",
        "Votes written to `votes.accepted` at a steady rate while the tally consumer runs; "
        "statements counted two ways: every statement the consumer's connection pool sent "
        "(asyncpg query loggers, exact), and the database's `pg_stat_database.xact_commit` "
        "over the same period (server side; every statement here runs in a transaction of "
        f"its own; {others}). The whole-pipeline part below counts every service's "
        "statements with `pg_stat_statements`.",
        "",
    ]
    rows = [
        [
            level["rate"],
            level["votes"],
            level["statements"],
            level["statements_per_vote"],
            level["xact_commits"],
            level["xact_per_vote"],
        ]
        for level in levels
    ]
    header = ("votes/s", "votes", "statements", "per vote", "xact_commit", "per vote")
    lines += table(header, rows)
    biggest = max(levels, key=lambda level: level["rate"])["by_text"]
    lines += ["", "Statements by text at the highest rate:", ""]
    lines += table(("statement (first 60 characters)", "count"), sorted(biggest.items()))
    lines.append("")
    return lines


METHOD = """\
## Method

- `make bench` runs `python -m bench.run`, which starts a fresh local stack of its own
  (`python -m scripts.stack exec --name bench`: `.run/bench`, the contract's ports +
  22000), stops the stack's own services so they do not compete for the cores, runs the
  parts one after another, writes this file and tears the stack down. `--quick` runs
  smaller backlogs and shorter steps for trying the bench out; its figures are not the
  reference.
- Load generator (`bench/loadgen.py`): open model. Vote *i* is due at *i / rate* s,
  sent whether or not earlier votes were answered, and its latency is measured from that
  intended instant, so a stalled server shows the whole stall (no coordinated omission).
  Latencies go into an HdrHistogram (1 us to 60 s, 3 significant digits). The client is
  a small HTTP/1.1 keep-alive client on asyncio with httptools parsing (`bench/http1.py`):
  a general-purpose client costs more CPU per request than the bare endpoint and would
  have measured itself. Its own dispatch lag (how late it sent each vote) is reported with
  every step.
- Mix: 80% valid votes by fresh voters, 8% repeats by a voter of the same run (daily
  limit), 5% wrong captcha answers, 4% bursts of 20 consecutive votes from one address,
  3% fresh voters behind one carrier-NAT address (100.64.0.1, on the bench poll's
  rate-limit allowlist). The bench calls ingest directly from 127.0.0.1, a trusted proxy,
  with `X-Forwarded-For` carrying each vote's simulated address; through the gateway
  nginx replaces that header and every vote would come from one address. For the rate
  search, voter tokens and captcha ids are minted with the stack's secrets (the same
  signed tokens and ids the API issues; the edge only checks a captcha's shape, and
  issuance is measured on its own in the captcha part).
- Ingest and the bare endpoint (`bench/bare_app.py`: the same Starlette and uvicorn
  served by the same `shared.service.serve`, one process, a route that reads the body
  and answers 202) are each launched by the bench with `python -m ...` in the same
  environment, searched one after the other (never both at once), and stopped.
- Catch-up: backlogs are written to topics of their own (4 partitions); the bare
  consumer is `AIOKafkaConsumer.getmany` discarding records; the service consumers run
  in-process exactly as their services attach them, on schemas and groups of their own
  and with the collector settings their services run with (`shared.service.tuned_gc`).
  Rates count from the first progress seen (group joins excluded for both). A read
  that lasts about a second (the bare reads, tally's catch-up) is made three times and
  the fastest kept, for the baseline and the consumer alike; antifraud's half-minute
  catch-up is made once.
- CPU figures are utime + stime from `/proc` for the server's process tree (the ingest
  event loop and its captcha render worker); in the whole pipeline, for every process
  tree and for the bench process itself over the steady part.
- Whole pipeline (`bench/pipeline.py`): the four services are launched by the bench
  with the bench's catalog, their consumer groups first moved to the topics' ends, and
  driven through vote_ingest with the same mix. As in the local stack, antifraud, tally,
  the lottery and Postgres run at nice 5 behind the edge and Kafka (on a cluster, pods
  with CPU requests of their own). Delays are per vote, from the services'
  own tables (`decided_at`, `counted_at`, `recorded_at` against `received_at`); lag in
  records is read from the broker every second; a consumer is stopped with SIGTERM and
  started again by the bench; memory is RSS and PSS from `/proc` for each process tree
  (Kafka and Postgres included); statements are `pg_stat_statements` calls, which the
  local stack preloads.
"""


def render(results: Results, pipeline_image: str | None = None) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {results['date']} by `python -m bench.run"
        + (" --quick" if results["quick"] else "")
        + f"` (parts: {', '.join(results['parts'])}).",
        "",
    ]
    if results["quick"]:
        lines += [
            "> A quick run: smaller backlogs and shorter steps. Run `make bench` for the "
            "reference figures.",
            "",
        ]
    lines += _machine(results)
    lines += _summary(results)
    if results.get("ingest"):
        lines += _ingest(results["ingest"])
    if results.get("captcha"):
        lines += _captcha(results["captcha"], results.get("ingest"))
    for name in ("antifraud", "tally"):
        part = results.get(name)
        if part is None:
            continue
        if "skipped" in part:
            lines += [
                f"## {name.capitalize()} catch-up",
                "",
                f"Not measured: {part['skipped']}",
                "",
            ]
            continue
        lines += _catchup(name, part)
        if name == "tally" and part.get("statements"):
            lines += _statements(part["statements"], bool(results.get("own_database")))
    not_run = [p for p in ("ingest", "captcha", "antifraud", "tally") if p not in results]
    if not_run:
        lines += [f"Not run in this invocation: {', '.join(not_run)}.", ""]
    if results.get("pipeline"):
        lines += report_pipeline.render(results["pipeline"], pipeline_image)
    else:
        lines += ["The whole pipeline was not measured in this invocation.", ""]
    lines += [METHOD]
    return "\n".join(lines).rstrip() + "\n"

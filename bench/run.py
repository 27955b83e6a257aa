"""`make bench`: measure ingest, captcha issuance and the consumers' catch-up against their
baselines in one run, and write docs/benchmarks.md.

    python -m bench.run                      # a fresh stack of its own in .run/bench
    python -m bench.run --quick --parts ingest,tally
    python -m bench.run --kafka 127.0.0.1:19092 --database-url postgresql://...  # trials

Without ``--kafka`` the command re-runs itself under ``python -m scripts.stack exec``,
which brings up Kafka, Postgres and the services on the contract's ports + 22000 and
tears everything down afterwards. The raw results go to ``<run dir>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench import catchup, floor, machine, plot, report
from bench.captcha import run_captcha
from bench.env import (
    REPO,
    BenchEnv,
    given_env,
    inside_stack,
    run_under_fresh_stack,
    stack_env,
    stop_like_ctrl_c,
)
from bench.ingest import SearchPlan, StepRule, run_ingest
from bench.loadgen import Mix
from bench.pipeline import QUICK_PLAN, PipelinePlan, run_pipeline
from bench.report import TARGETS

PARTS = ("ingest", "captcha", "antifraud", "tally", "pipeline")
DEFAULT_PARTS = PARTS

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Sizes:
    search: SearchPlan
    captcha_seconds: float
    backlog: int
    statement_rates: tuple[float, ...]
    statement_seconds: float
    pipeline: PipelinePlan
    floor_seconds: float
    floor_tokens: int


FULL = Sizes(
    SearchPlan(step_seconds=10, measure_seconds=30, refine_steps=2),
    captcha_seconds=15,
    backlog=200_000,
    statement_rates=(100, 1_000, 5_000),
    statement_seconds=15,
    pipeline=PipelinePlan(),
    floor_seconds=6.0,
    floor_tokens=20_000,
)
QUICK = Sizes(
    SearchPlan(step_seconds=4, measure_seconds=8, refine_steps=1, warmup_seconds=2),
    captcha_seconds=5,
    backlog=50_000,
    statement_rates=(100, 1_000, 3_000),
    statement_seconds=4,
    pipeline=QUICK_PLAN,
    floor_seconds=2.0,
    floor_tokens=5_000,
)


async def _run_parts(env: BenchEnv, parts: Sequence[str], sizes: Sizes) -> dict[str, Any]:
    mix = Mix()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "where": env.description,
        "machine": await machine.describe(env.database_url),
    }
    if "ingest" in parts:
        log.info("ingest: searching the maximum rate of vote_ingest, then the bare endpoint")
        ingest = await run_ingest(env, StepRule(), sizes.search, mix)
        results["ingest"] = ingest.to_dict()
        if ingest.bare.max_rate:
            rate = TARGETS["ingest"] * ingest.bare.max_rate
            log.info("ingest: what every vote costs at the least, at %.0f votes/s", rate)
            found = await floor.measure(env, rate, sizes.floor_seconds, sizes.floor_tokens)
            results["ingest"]["floor"] = found.to_dict()
    if "captcha" in parts:
        log.info("captcha: issuance through the API")
        results["captcha"] = (await run_captcha(env, sizes.captcha_seconds)).to_dict()
    if "antifraud" in parts:
        why_not = catchup.antifraud_ready()
        if why_not:
            log.warning("antifraud: skipped: %s", why_not)
            results["antifraud"] = {"skipped": why_not}
        else:
            log.info("antifraud: catch-up over %d submissions", sizes.backlog)
            part = await catchup.antifraud_catchup(env, sizes.backlog, mix)
            results["antifraud"] = part.to_dict()
    if "tally" in parts:
        log.info("tally: catch-up over %d accepted votes", sizes.backlog)
        results["tally"] = (await catchup.tally_catchup(env, sizes.backlog)).to_dict()
        levels = await catchup.tally_statements(env, sizes.statement_rates, sizes.statement_seconds)
        results["tally"]["statements"] = [level.to_dict() for level in levels]
    if "pipeline" in parts:
        log.info("pipeline: the sustained rate of the whole stack, then 70% of it")
        pipeline = await run_pipeline(env, sizes.pipeline, mix, results.get("ingest"), sizes.search)
        results["pipeline"] = pipeline.to_dict()
    return results


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}; known: {list(PARTS)}")
    return parts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small backlogs, short steps")
    parser.add_argument(
        "--parts", type=_parts, default=list(DEFAULT_PARTS), help=f"any of {','.join(PARTS)}"
    )
    parser.add_argument("--kafka", help="use this Kafka bootstrap instead of a fresh stack")
    parser.add_argument("--database-url", help="with --kafka: the PostgreSQL to use")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if bool(args.kafka) != bool(args.database_url):
        parser.error("--kafka and --database-url go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="bench | %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    stack_dir = inside_stack()
    if args.kafka:
        env = given_env(args.kafka, args.database_url, REPO / ".run" / "bench-given")
    elif stack_dir is not None:
        env = stack_env(stack_dir)
    else:
        return run_under_fresh_stack(sys.argv[1:] if argv is None else list(argv))
    sizes = QUICK if args.quick else FULL
    stop_like_ctrl_c()
    results = uvloop.run(_run_parts(env, args.parts, sizes))
    results["quick"] = args.quick
    results["parts"] = args.parts
    results["own_database"] = not args.kafka
    raw = env.run_dir / "results.json"
    raw.write_text(json.dumps(results, indent=2, default=str))
    image = None
    if results.get("pipeline", {}).get("seventy"):
        image = args.output.with_name(args.output.stem + "-pipeline.png")
        plot.render(results["pipeline"]["seventy"], image)
    args.output.write_text(report.render(results, image.name if image else None))
    log.info("wrote %s (raw results in %s)", args.output, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())

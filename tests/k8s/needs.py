"""What each component needs from Kafka, Postgres and the cluster: the statement the
manifests are checked against. Derived from the contract (section 6) and the services'
code: producers write, consumer groups read; shared.drain.PipelineProbe (tally, lottery)
reads the committed offsets of group antifraud and the end offsets of votes.submitted.
Kafka's Read and Write imply Describe, so Describe appears only on its own.
"""

from __future__ import annotations

from tests.k8s.manifests import Acl

KAFKA_ACLS: dict[str, set[Acl]] = {
    "vote-ingest": {("topic", "votes.submitted", "Write")},
    "antifraud": {
        ("topic", "votes.submitted", "Read"),
        ("group", "antifraud", "Read"),
        ("topic", "votes.accepted", "Write"),
        ("topic", "votes.rejected", "Write"),
        ("topic", "votes.deadletter", "Write"),
    },
    "tally": {
        ("topic", "votes.accepted", "Read"),
        ("group", "tally", "Read"),
        ("topic", "votes.deadletter", "Write"),
        ("topic", "votes.submitted", "Describe"),
        ("group", "antifraud", "Describe"),
    },
    "lottery": {
        ("topic", "votes.accepted", "Read"),
        ("group", "lottery", "Read"),
        ("topic", "votes.deadletter", "Write"),
        ("topic", "votes.submitted", "Describe"),
        ("group", "antifraud", "Describe"),
    },
    # KEDA reads the lag of the three groups on the two consumed topics.
    "keda-lag-reader": {
        ("topic", "votes.submitted", "Describe"),
        ("topic", "votes.accepted", "Describe"),
        ("group", "antifraud", "Describe"),
        ("group", "tally", "Describe"),
        ("group", "lottery", "Describe"),
    },
}

# Deployment -> (consumer group, topic) its ScaledObject follows.
CONSUMES: dict[str, tuple[str, str]] = {
    "antifraud": ("antifraud", "votes.submitted"),
    "tally": ("tally", "votes.accepted"),
    "lottery": ("lottery", "votes.accepted"),
}

VOTE_TOPICS = ("votes.submitted", "votes.accepted", "votes.rejected", "votes.deadletter")

DATABASE_ROLES = {"antifraud", "tally", "lottery"}

# Prometheus job names: the alert rules and the dashboard select on them.
SCRAPE_JOBS = {"vote_ingest", "antifraud", "tally", "lottery"}

# Secrets the operator creates or the operators generate (deploy/k8s/README.md).
SECRETS = {
    "votes-captcha",
    "votes-voter-token",
    "votes-pii",
    "votes-staff-tokens",
    "votes-db-antifraud",
    "votes-db-tally",
    "votes-db-lottery",
    "votes-kafka-cluster-ca-cert",
    "kafka-user-vote-ingest",
    "kafka-user-antifraud",
    "kafka-user-tally",
    "kafka-user-lottery",
}

# Public routes (path -> Ingress, Service), as the local gateway serves them.
ROUTES: dict[str, tuple[str, str]] = {
    "/": ("votes-public", "vote-ingest"),
    "/polls/futian-culture-2021": ("votes-public", "vote-ingest"),
    "/static/app.css": ("votes-public", "vote-ingest"),
    "/openapi.json": ("votes-public", "vote-ingest"),
    "/api/v1/session": ("votes-public", "vote-ingest"),
    "/api/v1/captcha": ("votes-public", "vote-ingest"),
    "/api/v1/captcha/AQGiHe0eHQEsqIIV-viThMxaB13STl5y1Fn9/audio": ("votes-public", "vote-ingest"),
    "/api/v1/polls": ("votes-public", "vote-ingest"),
    "/api/v1/polls/futian-culture-2021": ("votes-public", "vote-ingest"),
    "/api/v1/polls/futian-culture-2021/votes": ("votes-public", "vote-ingest"),
    "/api/v1/votes/0b7c1d2e": ("votes-lookups", "antifraud"),
    "/api/v1/polls/futian-culture-2021/results": ("votes-public", "tally"),
    "/api/v1/polls/futian-culture-2021/results/stream": ("votes-results-stream", "tally"),
    "/api/v1/polls/futian-culture-2021/results.csv": ("votes-public", "tally"),
    "/api/v1/polls/futian-culture-2021/results.json": ("votes-public", "tally"),
    "/api/v1/polls/futian-culture-2021/lottery": ("votes-lookups", "lottery"),
    "/api/v1/polls/futian-culture-2021/lottery/entry": ("votes-lookups", "lottery"),
    "/api/v1/polls/futian-culture-2021/lottery/audit": ("votes-lookups", "lottery"),
    "/api/v1/polls/futian-culture-2021/lottery/draw": ("votes-staff", "lottery"),
    "/api/v1/polls/futian-culture-2021/lottery/winners.csv": ("votes-staff", "lottery"),
    "/staff/": ("votes-staff", "lottery"),
    "/staff/polls/futian-culture-2021": ("votes-staff", "lottery"),
    "/staff/api/polls/futian-culture-2021/erase": ("votes-staff", "lottery"),
    "/polls/futian-culture-2021/qr.png": ("votes-public", "vote-ingest"),
    "/metrics": ("votes-internal-paths", "vote-ingest"),
    "/METRICS": ("votes-internal-paths", "vote-ingest"),
    "/healthz": ("votes-internal-paths", "vote-ingest"),
    "/readyz": ("votes-internal-paths", "vote-ingest"),
}

"""What two or more services share: event schemas, settings, the poll catalog, captcha and
voter identity, and the Kafka, PostgreSQL and HTTP plumbing. Each module is imported by
name (`from shared.catalog import Poll`); the package imports none of them itself."""

__all__ = [
    "auth",
    "captcha",
    "catalog",
    "consuming",
    "drain",
    "errors",
    "events",
    "http",
    "kafka",
    "lang",
    "logs",
    "metric_names",
    "netaddr",
    "pg",
    "producer",
    "service",
    "settings",
]

"""The local stack behind `make run` and `make test`.

One `Stack` owns every process of a local deployment: a single-node KRaft Kafka broker,
a PostgreSQL cluster of its own, the four services, nginx as the one public origin, and
Prometheus. Everything lives under one run directory (`.run` for `make run`, `.run/test`
for `make test`), so a second start keeps all data and `make clean` wipes it.

    Stack.prepare()   install what is missing, generate secrets and the demo catalog
    Stack.start()     postgres + kafka -> services -> gateway + prometheus, each awaited
    Stack.stop()      the reverse order; nothing is left behind
    kill / pause / resume / restart / stop_component / start_component   for chaos tests

Like Kubernetes, a supervisor restarts any component that exits without being asked to,
with exponential backoff (1 s doubling to 30 s, reset after 60 s up). Every child runs in
its own process group, so signals reach the whole tree (a service's worker processes,
Postgres' backends), and dies with the runner even when the runner is killed -9.

The CLI (`python -m scripts.stack run|test|exec|status|clean`) also serves a small
control socket, `<run dir>/control.sock`, through which tests and chaos scripts drive the
stack (see `tests/stackctl.py`).
"""

# Where things live:
#   settings.py    paths, component names, ports, StackError
#   tools.py       Debian packages installed when missing, Kafka's jars from Maven
#   console.py     the combined console
#   processes.py   one component's process group, and the HTTP and port probes
#   base.py        the state and addresses every part of a Stack reads
#   services.py    the services' command, environment, secrets and demo catalog
#   postgres.py    the stack's own PostgreSQL cluster
#   kafka.py       the KRaft broker
#   gateway.py     nginx and Prometheus
#   supervisor.py  spawn, await, stop and restart; the chaos operations
#   stack.py       Stack: the parts put together, started and stopped in order
#   control.py     the control socket
#   cli.py         the command line

from .cli import main, running
from .console import Console
from .control import ControlServer, control_request, stack_running
from .processes import Component, http_status
from .services import write_demo_catalog
from .settings import (
    CACHE,
    COMPONENTS,
    DEMO_POLL,
    DEPLOY,
    EXEC_PORT_OFFSET,
    LOCAL_HOSTS,
    REPO,
    SERVICES,
    STACK_OWNED,
    TEST_PORT_OFFSET,
    Ports,
    StackError,
)
from .stack import Stack
from .tools import install_packages, kafka_libs, missing_packages, pg_bindir

__all__ = [
    "CACHE",
    "COMPONENTS",
    "DEMO_POLL",
    "DEPLOY",
    "EXEC_PORT_OFFSET",
    "LOCAL_HOSTS",
    "REPO",
    "SERVICES",
    "STACK_OWNED",
    "TEST_PORT_OFFSET",
    "Component",
    "Console",
    "ControlServer",
    "Ports",
    "Stack",
    "StackError",
    "control_request",
    "http_status",
    "install_packages",
    "kafka_libs",
    "main",
    "missing_packages",
    "pg_bindir",
    "running",
    "stack_running",
    "write_demo_catalog",
]

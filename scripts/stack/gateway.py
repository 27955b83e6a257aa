"""nginx as the one public origin, and Prometheus scraping the services."""

from __future__ import annotations

import os
import pwd
from string import Template

from .base import StackBase
from .settings import DEPLOY, REPO, SERVICES
from .tools import _which


class _AtTemplate(Template):
    delimiter = "@@"  # nginx configs are full of $variables


class GatewayMixin(StackBase):
    """The configs of nginx and Prometheus, written from their templates at each start."""

    def _gateway_command(self) -> list[str]:
        nginx_dir = self.run_dir / "nginx"
        user_directive = "# runs as the invoking user"
        if os.geteuid() == 0:
            # Workers drop root; they write request bodies and buffers to these folders.
            nobody = pwd.getpwnam("nobody")
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                path = nginx_dir / "tmp" / sub
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            import grp

            user_directive = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
        template = _AtTemplate((DEPLOY / "local" / "nginx.conf.in").read_text())
        conf = nginx_dir / "nginx.conf"
        conf.write_text(
            template.substitute(
                USER_DIRECTIVE=user_directive,
                RUN_DIR=self.run_dir,
                LOG_DIR=self.log_dir,
                GATEWAY_HOST=self.gateway_host,
                GATEWAY_PORT=self.ports.gateway,
                **{f"{name.upper()}_PORT": getattr(self.ports, name) for name in SERVICES},
            )
        )
        nginx = _which("nginx") or "nginx"
        return [nginx, "-e", "stderr", "-p", str(nginx_dir), "-c", str(conf)]

    def _prometheus_command(self) -> list[str]:
        prom_dir = self.run_dir / "prometheus"
        template = Template((DEPLOY / "prometheus" / "prometheus.yml.in").read_text())
        conf = prom_dir / "prometheus.yml"
        conf.write_text(
            template.substitute(
                REPO_DIR=REPO,
                **{f"{name.upper()}_PORT": getattr(self.ports, name) for name in SERVICES},
            )
        )
        return [
            _which("prometheus") or "prometheus",
            f"--config.file={conf}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
            "--log.level=warn",
        ]

"""The deployment guide's commands for the Secrets make values the services accept.

The guide's block runs as written, with `kubectl` replaced by a function that prints what
it would store: a value of the wrong shape (a PII key that is not 32 bytes of base64, a
staff token list that is not `name=<sha256 hex>`) fails here, not as a pod that will not
start.
"""

from __future__ import annotations

import re
import subprocess
import textwrap

from services.lottery.pii import parse_keyring
from services.vote_ingest.main import IngestSettings
from shared.auth import StaffTokens
from tests.k8s.manifests import K8S_DIR

GUIDE = K8S_DIR / "README.md"
KUBECTL_STUB = 'kubectl() { printf "%s\\n" "$*"; }\n'


def secrets_block() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    return next(textwrap.dedent(b) for b in blocks if "create secret generic" in b)


def stored_values() -> tuple[dict[str, dict[str, str]], str]:
    """Each generic Secret's literals, and the staff token the block made for alice."""
    script = KUBECTL_STUB + secrets_block() + 'printf "token-of-alice %s\\n" "$alice"\n'
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, check=True
    )
    secrets: dict[str, dict[str, str]] = {}
    token = ""
    for line in run.stdout.splitlines():
        if line.startswith("token-of-alice "):
            token = line.split(" ", 1)[1]
        named = re.search(r"create secret generic (\S+)", line)
        if named:
            secrets[named.group(1)] = dict(re.findall(r"--from-literal=([\w-]+)=(\S*)", line))
    return secrets, token


def test_the_guide_s_secret_values_are_accepted_by_the_services() -> None:
    secrets, alice = stored_values()

    parse_keyring(secrets["votes-pii"]["key"])
    IngestSettings(
        captcha_secret=secrets["votes-captcha"]["secret"],
        voter_token_secret=secrets["votes-voter-token"]["secret"],
    )
    staff = StaffTokens(secrets["votes-staff-tokens"]["tokens"])
    assert staff.identify(f"Bearer {alice}") == "alice"
    for role in ("antifraud", "tally", "lottery"):
        assert len(secrets[f"votes-db-{role}"]["password"]) >= 32

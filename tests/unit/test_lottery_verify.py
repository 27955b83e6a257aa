"""The public verifier: recomputes a draw from its audit record and names every change."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.lottery import draw
from services.lottery.draw import AuditRecord, Entry
from services.lottery.verify import main, verify_record
from tests.support.commands import run_module

SEED = hashlib.sha256(b"verify-test-seed").digest()


def _entry_id(n: int) -> str:
    return hashlib.sha256(b"entry/%d" % n).hexdigest()[:32]


def _record(count: int = 12, prizes: int = 3, reserves: int = 2) -> AuditRecord:
    entries = [Entry(entry_id=_entry_id(n), weight=1 + n % 5) for n in range(count)]
    drawn_at = datetime(2022, 1, 10, 2, tzinfo=UTC)
    return draw.draw("futian-culture-2021", SEED, entries, prizes, reserves, "", drawn_at, "li")


def _as_data(record: AuditRecord) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(record.model_dump_json())
    return data


def _write(tmp_path: Path, data: dict[str, Any] | str) -> str:
    path = tmp_path / "audit.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def _run(
    tmp_path: Path, data: dict[str, Any] | str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    status = main([_write(tmp_path, data)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_genuine_record_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(tmp_path, _as_data(_record()), capsys)
    assert status == 0
    assert out.startswith("OK futian-culture-2021:")
    assert "3 winners and 2 reserves" in out


def test_a_changed_weight_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _as_data(_record())
    data["entries"][4]["weight"] += 1
    status, out, _ = _run(tmp_path, data, capsys)
    assert status == 1
    assert "DIFFERS entries_digest: the record says" in out


def test_a_changed_winner_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _as_data(_record())
    data["winners"][1], data["reserves"][0] = data["reserves"][0], data["winners"][1]
    status, out, _ = _run(tmp_path, data, capsys)
    assert status == 1
    assert f"DIFFERS winners: rank 2 is {data['winners'][1]} in the record" in out
    assert "DIFFERS reserves: rank 1" in out


def test_a_changed_seed_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _as_data(_record())
    data["seed"] = hashlib.sha256(b"another seed").hexdigest()
    status, out, _ = _run(tmp_path, data, capsys)
    assert status == 1
    assert "DIFFERS commitment: the record says" in out


def test_a_dropped_winner_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _as_data(_record())
    data["winners"].pop()
    status, out, _ = _run(tmp_path, data, capsys)
    assert status == 1
    assert "DIFFERS winners: the record lists 2, the rules give 3" in out


def test_changed_external_entropy_is_reported() -> None:
    changed = _record().model_copy(update={"external_entropy": "14012.34"})
    assert any(line.startswith("winners:") for line in verify_record(changed))


def test_a_removed_entry_is_reported() -> None:
    record = _record()
    kept = tuple(e for e in record.entries if e.entry_id != record.winners[0])
    differences = verify_record(record.model_copy(update={"entries": kept}))
    assert any(line.startswith("entries_digest:") for line in differences)
    assert any(line.startswith("winners:") for line in differences)


def test_a_weight_zero_entry_is_reported() -> None:
    record = _record()
    padded = (*record.entries, Entry(entry_id="ffff", weight=0))
    differences = verify_record(record.model_copy(update={"entries": padded}))
    assert "entries: ffff has weight 0, which is not eligible" in differences


def test_repeated_entries_are_reported_without_recomputing() -> None:
    record = _record()
    repeated = (*record.entries, record.entries[0])
    differences = verify_record(record.model_copy(update={"entries": repeated}))
    assert f"entries: {record.entries[0].entry_id} is listed more than once" in differences
    assert differences[-1].startswith("winners, reserves: not recomputed")


def test_an_unknown_algorithm_is_reported() -> None:
    differences = verify_record(_record().model_copy(update={"algorithm": "coin-flip"}))
    assert differences == [
        "algorithm: 'coin-flip' is not 'weighted-successive-sampling-v1', which this implements"
    ]


@settings(max_examples=25, deadline=None)
@given(count=st.integers(0, 30), prizes=st.integers(1, 8), reserves=st.integers(0, 5))
def test_every_record_the_draw_makes_verifies(count: int, prizes: int, reserves: int) -> None:
    assert verify_record(_record(count, prizes, reserves)) == []


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_file_that_is_not_json_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(tmp_path, "{not json", capsys)
    assert (status, out) == (2, "")
    assert "not an audit record: (record): Invalid JSON" in err


def test_a_record_missing_a_field_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _as_data(_record())
    del data["entries_digest"]
    status, _, err = _run(tmp_path, data, capsys)
    assert status == 2
    assert "entries_digest: Field required" in err


def test_a_malformed_seed_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _as_data(_record())
    data["seed"] = "00ff"
    status, _, err = _run(tmp_path, data, capsys)
    assert status == 2
    assert "seed:" in err


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    good = _write(tmp_path, _as_data(_record()))
    result = run_module("services.lottery.verify", good)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK ")


def test_the_command_reads_standard_input_and_exits_1_on_a_difference() -> None:
    data = _as_data(_record())
    data["reserves"].reverse()
    result = run_module("services.lottery.verify", "-", stdin=json.dumps(data))
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("DIFFERS reserves: rank 1")

"""The CLI through click's runner: exit codes, one-line errors, --json, on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver.cli import cli
from tests.conftest import MANIFESTS

DATA = Path(__file__).parent / "data" / "manifests"


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    root = tmp_path / "storage"

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(cli, ["--root", str(root), "--collector", "cli-test", *args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_init_is_harmless_twice(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("init")
    assert code == 0 and "signing key" in out
    key = tmp_path / "storage" / "keys" / "archive-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    code, out, _ = run("init", "--json")
    assert code == 0 and json.loads(out)["created"] == []
    assert key.read_bytes() == before


def test_commands_before_init_say_what_to_do(run) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("status")
    assert code == 2
    assert err.strip().startswith("error:") and "archiver init" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_load_list_show_status_custody(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    code, out, _ = run("manifest", "load", str(MANIFESTS), "--json")
    assert code == 0
    created = json.loads(out)["incidents_created"]
    assert "khan-shaykhoun-chemical-attack-2017-04-04" in created
    code, out, _ = run("manifest", "load", str(MANIFESTS))
    assert code == 0 and "0 created, 0 updated" in out

    code, out, _ = run("incident", "list", "--json")
    assert {i["id"] for i in json.loads(out)} == set(created)
    code, out, _ = run("incident", "show", "khan-shaykhoun-chemical-attack-2017-04-04")
    assert code == 0 and "Khan Shaykhoun" in out and "lead:" in out
    code, _, err = run("incident", "show", "no-such-incident")
    assert code == 3 and err.startswith("error: no incident 'no-such-incident'")

    code, out, _ = run(
        "source",
        "add",
        "https://youtu.be/AAAAAAAAAAA?si=x",
        "--incident",
        "khan-shaykhoun-chemical-attack-2017-04-04",
        "--json",
    )
    assert code == 0 and json.loads(out)["url"] == "https://www.youtube.com/watch?v=AAAAAAAAAAA"
    code, out, _ = run(
        "source",
        "add",
        "https://www.youtube.com/watch?v=AAAAAAAAAAA",
        "--incident",
        "khan-shaykhoun-chemical-attack-2017-04-04",
    )
    assert code == 0 and "already known" in out
    code, _, err = run(
        "source", "add", "ftp://example.org/x", "--incident", "khan-shaykhoun-chemical-attack-2017-04-04"
    )
    assert code == 2 and "scheme 'ftp' is not supported" in err

    code, out, _ = run("status", "--json")
    status = json.loads(out)
    assert status["sources"]["pending"] == 1 and status["incidents"] == len(created)

    code, out, _ = run("custody", "log", "--incident", "khan-shaykhoun-chemical-attack-2017-04-04", "--json")
    actions = [e["action"] for e in json.loads(out)]
    assert actions[0] == "incident.created" and "source.added" in actions
    code, out, _ = run("custody", "check")
    assert code == 0 and "intact" in out


def test_custody_check_names_first_bad_event(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("manifest", "load", str(MANIFESTS))
    con = sqlite3.connect(tmp_path / "storage" / "catalogue.sqlite")
    con.execute("DROP TRIGGER custody_events_no_update")
    con.execute("UPDATE custody_events SET subject = 'incident:forged' WHERE seq = 7")
    con.commit()
    con.close()
    code, _out, err = run("custody", "check")
    assert code == 1 and "BROKEN at event 7" in err


def test_invalid_manifest_exit_2_with_location(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text((DATA / "valid.yaml").read_text().replace("country: SY", "country: Syria"), encoding="utf-8")
    code, out, err = run("manifest", "validate", str(bad))
    assert code == 2 and f"error: {bad}:11: incidents[0].place.country:" in err
    run("init")
    code, out, err = run("manifest", "load", str(bad), str(DATA / "valid.yaml"))
    assert code == 2 and "1 created" in out


def test_every_command_documents_an_example() -> None:
    """sqlite-utils' rule: a command without an example in its help is undocumented."""
    import click

    def walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
        out = []
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                out += walk(cmd, f"{prefix}{name} ")
            else:
                out.append((prefix + name, cmd))
        return out

    missing = [name for name, cmd in walk(cli, "") if "Example:" not in (cmd.help or "")]
    assert not missing, f"commands without an Example: {missing}"
    docs = (Path(__file__).parent.parent / "README.md").read_text() + "".join(
        p.read_text() for p in (Path(__file__).parent.parent / "docs").glob("*.md")
    )
    undocumented = [name for name, _ in walk(cli, "") if f"archiver {name}" not in docs]
    assert not undocumented, f"commands missing from README/docs: {undocumented}"


def test_console_script_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "archiver", "--version"], capture_output=True, text=True, check=True)
    assert "archiver" in out.stdout


def test_second_run_exits_at_once_while_one_holds_the_lock(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    run("init")
    root = tmp_path / "storage"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from pathlib import Path; from archiver.jobs import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(30)", str(root)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        code, _, err = run("run")
        assert code == 75 and "another archiver run is working" in err
        assert time.monotonic() - started < 5
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    code, out, _ = run("run", "--json")
    assert code == 0 and json.loads(out)["captured"] == 0
    assert "run finished" in (root / "logs" / "archiver.log").read_text()

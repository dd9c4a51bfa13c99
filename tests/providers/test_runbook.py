"""Runbook checks and commands: allowlist, no shell, timeouts, output caps, read-only SQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from orchestrator.database import asyncpg_dsn
from orchestrator.errors import ConfigurationError, NonRetryableError
from orchestrator.node import StepContext
from orchestrator.refs import Output
from providers import runbook
from providers.errors import CommandNotAllowedError
from providers.runbook import Check, RunbookProvider
from providers.sandbox import Sandbox

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]

PYTHON = sys.executable


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


@pytest.fixture
def commands() -> RunbookProvider:
    return RunbookProvider(allowed_commands=["echo", "sleep", "env", PYTHON], max_output_bytes=200)


async def test_arguments_are_never_shell_interpreted(
    run: Run, make_ctx: MakeContext, commands: RunbookProvider, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    argv = ["echo", f"a; touch {marker}", "$(id)", "`whoami`", "*", "|", "&&", "$HOME"]
    check = await run(runbook.run_command(argv=argv), make_ctx(commands))
    assert check.status == "ok"
    assert check.output == " ".join(argv[1:])
    assert not marker.exists()


async def test_only_allowlisted_executables_run(
    run: Run, make_ctx: MakeContext, commands: RunbookProvider, tmp_path: Path
) -> None:
    alias = tmp_path / "not-echo"
    alias.symlink_to(shutil.which("echo") or "/usr/bin/echo")
    for argv, problem in [
        (["sh", "-c", "echo hi"], "'sh' .* is not allowed"),
        (["rm", "-rf", str(tmp_path)], "'rm' .* is not allowed"),
        ([str(alias), "hi"], "not-echo' is not allowed"),  # symlinks are not followed
        (["./echo"], "relative path"),
        (["no-such-binary-xyz"], "is not allowed"),
    ]:
        with pytest.raises(CommandNotAllowedError, match=problem) as err:
            await run(runbook.run_command(argv=argv), make_ctx(commands))
        assert isinstance(err.value, NonRetryableError)
    assert tmp_path.is_dir()  # noqa: ASYNC240 - a stat, not I/O worth a thread
    with pytest.raises(ConfigurationError, match="not an executable"):
        RunbookProvider(allowed_commands=["/definitely/not/here"])
    with pytest.raises(CommandNotAllowedError, match="allowed: nothing"):
        RunbookProvider().resolve("echo")


async def test_timeouts_kill_the_whole_process_group(
    run: Run, make_ctx: MakeContext, commands: RunbookProvider
) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    check = await run(
        runbook.run_command(argv=[PYTHON, "-c", script], timeout=2.0), make_ctx(commands)
    )
    assert time.monotonic() - started < 5
    assert check.status == "fail"
    assert "timed out after 2 s; killed" in check.output
    grandchild = int(check.output.split()[0])
    for _ in range(50):  # reaped by init shortly after the kill
        if await asyncio.to_thread(_gone, grandchild):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"grandchild {grandchild} survived the timeout")


async def test_output_is_capped(run: Run, make_ctx: MakeContext, commands: RunbookProvider) -> None:
    check = await run(
        runbook.run_command(argv=[PYTHON, "-c", "print('x' * 100000)"]), make_ctx(commands)
    )
    assert check.status == "ok"
    assert check.output.startswith("x" * 200)
    assert "[output truncated: 99801 more bytes]" in check.output


async def test_exit_codes_and_environment(
    run: Run, make_ctx: MakeContext, commands: RunbookProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = await run(
        runbook.run_command(argv=[PYTHON, "-c", "import sys; sys.exit(3)"]), make_ctx(commands)
    )
    assert (failing.status, failing.output) == ("fail", "[exit status 3]")
    warning = await run(
        runbook.run_command(argv=[PYTHON, "-c", "raise SystemExit(1)"], warn_exit_codes=[1]),
        make_ctx(commands),
    )
    assert warning.status == "warn"
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-must-not-leak")
    env = await run(runbook.run_command(argv=["env"], env={"REGION": "eu"}), make_ctx(commands))
    assert "xoxb-must-not-leak" not in env.output
    assert "REGION=eu" in env.output


async def test_network_checks(run: Run, make_ctx: MakeContext, sandbox: Sandbox) -> None:
    url = sandbox.urls["jira"] + "/_sandbox/state"
    ok = await run(runbook.http_check(url=url, contains="projects"), make_ctx())
    assert ok.status == "ok" and ok.output.startswith("HTTP 200")
    wrong = await run(runbook.http_check(url=url, expected_status=204), make_ctx())
    assert (wrong.status, wrong.output.endswith("expected 204")) == ("fail", True)
    down = await run(runbook.http_check(url="http://127.0.0.1:9/", timeout=1), make_ctx())
    assert down.status == "fail" and "ClientConnectorError" in down.output

    port = urlsplit(sandbox.urls["jira"]).port
    assert (await run(runbook.tcp_check(host="127.0.0.1", port=port), make_ctx())).status == "ok"
    closed = await run(runbook.tcp_check(host="127.0.0.1", port=9, timeout=1), make_ctx())
    assert closed.status == "fail"

    dns = await run(runbook.dns_check(hostname="localhost", expected=["127.0.0.1"]), make_ctx())
    assert dns.status == "ok" and "127.0.0.1" in dns.output
    odd = await run(runbook.dns_check(hostname="localhost", expected=["10.9.9.9"]), make_ctx())
    assert odd.status == "fail" and "missing 10.9.9.9" in odd.output


async def test_sql_checks_are_read_only_and_time_limited(
    run: Run, make_ctx: MakeContext, server_url: str
) -> None:
    dsn = asyncpg_dsn(server_url)
    db = RunbookProvider(database_url=dsn)
    ok = await run(runbook.sql_check(query="SELECT 1 AS one"), make_ctx(db))
    assert (ok.status, ok.output) == ("ok", '1 rows\n{"one": 1}')
    slow = await run(
        runbook.sql_check(query="SELECT pid FROM pg_stat_activity", on_rows="warn"), make_ctx(db)
    )
    assert slow.status == "warn"
    empty = await run(
        runbook.sql_check(query="SELECT 1 WHERE false", on_empty="fail"), make_ctx(db)
    )
    assert empty.status == "fail"
    write = await run(
        runbook.sql_check(query="CREATE TABLE runbook_must_not_exist (x int)"), make_ctx(db)
    )
    assert write.status == "fail" and "read-only transaction" in write.output
    sleepy = await run(runbook.sql_check(query="SELECT pg_sleep(10)", timeout=0.5), make_ctx(db))
    assert sleepy.status == "fail" and sleepy.duration_ms < 5000


async def test_sql_check_configuration_and_redaction(run: Run, make_ctx: MakeContext) -> None:
    with pytest.raises(ConfigurationError, match="RESOLUTE_RUNBOOK_DATABASE_URL"):
        await run(runbook.sql_check(query="SELECT 1"), make_ctx(RunbookProvider()))
    unreachable = RunbookProvider(database_url="postgresql://u:hunter2-secret@127.0.0.1:9/db")
    check = await run(runbook.sql_check(query="SELECT 1", timeout=1), make_ctx(unreachable))
    assert check.status == "fail" and "hunter2-secret" not in check.output


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESOLUTE_RUNBOOK_ALLOWED_COMMANDS", "echo, sleep")
    monkeypatch.setenv("RESOLUTE_RUNBOOK_MAX_OUTPUT_BYTES", "10")
    provider = RunbookProvider.from_env()
    assert provider.resolve("echo") == os.path.normpath(shutil.which("echo") or "")
    assert provider.max_output_bytes == 10


async def test_summarise_and_the_diagnostics_node(run: Run, make_ctx: MakeContext) -> None:
    checks = [
        Check(name="api", status="ok", output="HTTP 200 in 12 ms", duration_ms=12),
        Check(name="db", status="warn", output="3 rows\n...", duration_ms=40),
        Check(name="dns", status="fail", output="", duration_ms=1),
    ]
    summary = runbook.summarise(checks)
    assert (summary.status, summary.ok, summary.warn, summary.fail) == ("fail", 1, 1, 1)
    assert summary.summary.splitlines() == [
        "Diagnostics: 1 ok, 1 warn, 1 fail",
        "- OK api: HTTP 200 in 12 ms (12 ms)",
        "- WARN db: 3 rows (40 ms)",
        "- FAIL dns (1 ms)",
    ]
    assert runbook.summarise([]).status == "ok"
    ctx = make_ctx(outputs={"api": checks[0].model_dump(), "db": checks[1].model_dump()})
    node = runbook.diagnostics(checks=[Output("api"), Output("db")])
    result = await run(node, ctx)
    assert (result.status, result.ok, result.warn) == ("warn", 1, 1)

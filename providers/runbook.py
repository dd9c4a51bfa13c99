"""Diagnostics and remediation building blocks: HTTP, TCP, DNS and SQL checks, and
allowlisted commands. Each returns a ``Check``; ``summarise`` folds checks into one
``DiagnosticsSummary`` whose ``summary`` text reads well in Jira, Slack or PagerDuty.

A failing check is a finding, not an error: checks return ``status="fail"`` and the
flow decides. Misconfiguration (a command off the allowlist, no database URL) raises
a non-retryable error instead.

Commands run without a shell (``create_subprocess_exec``), from an allowlist of
executables matched by absolute path, with a minimal environment (so the worker's
credentials never reach them), a timeout that kills the whole process group, and a cap
on captured output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.errors import ConfigurationError
from orchestrator.node import Node, RetryPolicy, StepContext

from .binding import Bind, provider_node
from .errors import CommandNotAllowedError
from .http import Redactor

__all__ = [
    "Check",
    "CheckStatus",
    "DiagnosticsSummary",
    "Provider",
    "RunbookProvider",
    "check_dns",
    "check_http",
    "check_tcp",
    "diagnostics",
    "dns_check",
    "http_check",
    "run_command",
    "sql_check",
    "summarise",
    "tcp_check",
]

CheckStatus = Literal["ok", "warn", "fail"]

_RANK: dict[CheckStatus, int] = {"ok": 0, "warn": 1, "fail": 2}
_MAX_ROWS = 20  # rows of a SQL check quoted in its output
_CHUNK = 65536
_BODY_LIMIT = 1 << 20
_MAX_OUTPUT = 64 * 1024


class Check(BaseModel):
    name: str
    status: CheckStatus
    output: str
    duration_ms: int


class DiagnosticsSummary(BaseModel):
    status: CheckStatus
    ok: int
    warn: int
    fail: int
    checks: list[Check]
    summary: str


def summarise(checks: Sequence[Check]) -> DiagnosticsSummary:
    """The worst status, counts, and a bullet-list summary of the checks."""
    counts = {s: sum(c.status == s for c in checks) for s in _RANK}
    worst: CheckStatus = max((c.status for c in checks), key=_RANK.__getitem__, default="ok")
    lines = [f"Diagnostics: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"]
    for c in checks:
        first = c.output.strip().splitlines()[0] if c.output.strip() else ""
        detail = f": {first}" if first else ""
        lines.append(f"- {c.status.upper()} {c.name}{detail} ({c.duration_ms} ms)")
    return DiagnosticsSummary(
        status=worst,
        ok=counts["ok"],
        warn=counts["warn"],
        fail=counts["fail"],
        checks=list(checks),
        summary="\n".join(lines),
    )


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _problem(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- network checks -----------------------------------------------------------------------


async def check_http(
    url: str,
    *,
    expected_status: Sequence[int] = (200,),
    contains: str | None = None,
    timeout: float = 5.0,
    warn_after_ms: int | None = None,
    name: str | None = None,
) -> Check:
    """GET ``url``: ok on an expected status (and ``contains`` in the body)."""
    name = name or f"http {url}"
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            # Enough to look for ``contains``; a huge page is not read whole.
            body = (await resp.content.read(_BODY_LIMIT)).decode("utf-8", "replace")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(name=name, status="fail", output=_problem(exc), duration_ms=_ms(started))
    took = _ms(started)
    output = f"HTTP {status} in {took} ms"
    if status not in expected_status:
        expected = ", ".join(map(str, expected_status))
        return Check(
            name=name, status="fail", output=f"{output}, expected {expected}", duration_ms=took
        )
    if contains is not None and contains not in body:
        return Check(
            name=name, status="fail", output=f"{output}, body lacks {contains!r}", duration_ms=took
        )
    slow = warn_after_ms is not None and took > warn_after_ms
    return Check(name=name, status="warn" if slow else "ok", output=output, duration_ms=took)


async def check_tcp(
    host: str, port: int, *, timeout: float = 5.0, name: str | None = None
) -> Check:
    """Open a TCP connection to ``host:port``."""
    name = name or f"tcp {host}:{port}"
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return Check(name=name, status="fail", output=_problem(exc), duration_ms=_ms(started))
    writer.close()
    await writer.wait_closed()
    took = _ms(started)
    return Check(name=name, status="ok", output=f"connected in {took} ms", duration_ms=took)


async def check_dns(
    hostname: str,
    *,
    expected: Sequence[str] = (),
    timeout: float = 5.0,
    name: str | None = None,
) -> Check:
    """Resolve ``hostname``; fail unless every ``expected`` address is among the answers."""
    name = name or f"dns {hostname}"
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(hostname, None, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError) as exc:
        return Check(name=name, status="fail", output=_problem(exc), duration_ms=_ms(started))
    addresses = sorted({str(info[4][0]) for info in infos})
    missing = [a for a in expected if a not in addresses]
    output = f"{hostname} -> {', '.join(addresses)}"
    if missing:
        output += f"; missing {', '.join(missing)}"
    return Check(
        name=name, status="fail" if missing else "ok", output=output, duration_ms=_ms(started)
    )


# -- the provider: SQL and commands --------------------------------------------------------


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESOLUTE_RUNBOOK_")

    database_url: SecretStr | None = None
    allowed_commands: str = ""
    max_output_bytes: int = _MAX_OUTPUT


class RunbookProvider:
    """Where SQL checks connect and which executables commands may run."""

    name = "runbook"

    def __init__(
        self,
        *,
        allowed_commands: Sequence[str] = (),
        database_url: str | SecretStr | None = None,
        max_output_bytes: int = _MAX_OUTPUT,
        search_path: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.search_path = search_path if search_path is not None else os.environ.get("PATH", "")
        self.allowed = frozenset(self._allow(entry) for entry in allowed_commands)
        self.database_url = (
            SecretStr(database_url) if isinstance(database_url, str) else database_url
        )
        self.max_output_bytes = max_output_bytes
        # Commands get this environment, not the worker's (which holds vendor tokens).
        self.env = dict(env) if env is not None else {"PATH": os.defpath, "LANG": "C.UTF-8"}
        # The password alone too: a driver may quote it without the rest of the URL.
        url = self.database_url.get_secret_value() if self.database_url else ""
        self._redact = Redactor([self.database_url, urlsplit(url).password])

    @classmethod
    def from_env(cls) -> RunbookProvider:
        """Read ``RESOLUTE_RUNBOOK_{DATABASE_URL,ALLOWED_COMMANDS,MAX_OUTPUT_BYTES}``."""
        env = _Env()
        return cls(
            allowed_commands=[c.strip() for c in env.allowed_commands.split(",") if c.strip()],
            database_url=env.database_url,
            max_output_bytes=env.max_output_bytes,
        )

    def _allow(self, entry: str) -> str:
        path = entry if os.path.isabs(entry) else shutil.which(entry, path=self.search_path)
        if path is None or not os.access(path, os.X_OK) or os.path.isdir(path):
            raise ConfigurationError(f"runbook allowlist: {entry!r} is not an executable")
        return os.path.normpath(path)

    def resolve(self, program: str) -> str:
        """The allowlisted absolute path ``program`` names; ``CommandNotAllowedError`` if none.

        Paths are compared without following symlinks, so a multi-call binary (busybox)
        allowed under one name cannot be reached under another.
        """
        if os.sep in program:
            if not os.path.isabs(program):
                raise CommandNotAllowedError(
                    f"runbook: {program!r} is a relative path; use a name or an absolute path"
                )
            path: str | None = os.path.normpath(program)
        else:
            path = shutil.which(program, path=self.search_path)
            path = os.path.normpath(path) if path else None
        if path is None or path not in self.allowed:
            allowed = (
                ", ".join(sorted(self.allowed)) or "nothing (RESOLUTE_RUNBOOK_ALLOWED_COMMANDS)"
            )
            shown = f"{program!r}" + (f" ({path})" if path and path != program else "")
            raise CommandNotAllowedError(f"runbook: {shown} is not allowed; allowed: {allowed}")
        return path

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        ok_exit_codes: Sequence[int] = (0,),
        warn_exit_codes: Sequence[int] = (),
    ) -> Check:
        """Run ``argv`` (no shell); ok/warn by exit code, fail otherwise or on timeout."""
        if not argv:
            raise CommandNotAllowedError("runbook: empty command")
        program = self.resolve(argv[0])
        name = name or " ".join(argv)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env={**self.env, **(env or {})},
            start_new_session=True,  # its own process group, killed whole on timeout
        )
        captured = bytearray()
        dropped = 0

        async def drain() -> None:
            nonlocal dropped
            assert proc.stdout is not None
            # Keep reading past the cap so a chatty child never blocks on a full pipe.
            while chunk := await proc.stdout.read(_CHUNK):
                room = max(0, self.max_output_bytes - len(captured))
                captured.extend(chunk[:room])
                dropped += len(chunk) - min(room, len(chunk))
            await proc.wait()

        timed_out = False
        try:
            await asyncio.wait_for(drain(), timeout)
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):  # it may have just exited
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        output = captured.decode("utf-8", "replace")
        if dropped:
            output += f"\n[output truncated: {dropped} more bytes]"
        if timed_out:
            output += f"\n[timed out after {timeout:g} s; killed]"
            return Check(name=name, status="fail", output=output.strip(), duration_ms=_ms(started))
        code = proc.returncode
        status: CheckStatus = (
            "ok" if code in ok_exit_codes else "warn" if code in warn_exit_codes else "fail"
        )
        if code != 0:
            output += f"\n[exit status {code}]"
        return Check(name=name, status=status, output=output.strip(), duration_ms=_ms(started))

    async def query(
        self,
        sql: str,
        *,
        timeout: float = 5.0,
        on_rows: CheckStatus = "ok",
        on_empty: CheckStatus = "ok",
        name: str | None = None,
    ) -> Check:
        """Run ``sql`` in a read-only transaction with a statement timeout."""
        if self.database_url is None:
            raise ConfigurationError(
                "runbook.sql_check needs a database: set RESOLUTE_RUNBOOK_DATABASE_URL or pass "
                "RunbookProvider(database_url=...)"
            )
        name = name or "sql " + " ".join(sql.split())[:60]
        started = time.monotonic()
        try:
            conn = await asyncpg.connect(self.database_url.get_secret_value(), timeout=timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            return Check(
                name=name,
                status="fail",
                output=self._redact(_problem(exc)),
                duration_ms=_ms(started),
            )
        try:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}")
                rows = await conn.fetch(sql, timeout=timeout)
        except (asyncpg.PostgresError, TimeoutError) as exc:
            return Check(
                name=name,
                status="fail",
                output=self._redact(_problem(exc)),
                duration_ms=_ms(started),
            )
        finally:
            await conn.close()
        quoted = [json.dumps(dict(r), default=str) for r in rows[:_MAX_ROWS]]
        more = [f"... {len(rows) - _MAX_ROWS} more rows"] if len(rows) > _MAX_ROWS else []
        output = "\n".join([f"{len(rows)} rows", *quoted, *more])
        return Check(
            name=name, status=on_rows if rows else on_empty, output=output, duration_ms=_ms(started)
        )

    async def close(self) -> None:
        """Nothing to release: connections and processes live for one check."""


Provider = RunbookProvider


# -- nodes ---------------------------------------------------------------------------------


class HttpCheckInput(BaseModel):
    url: str = Field(pattern=r"^https?://")
    expected_status: list[int] = [200]

    @field_validator("expected_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    contains: str | None = None
    timeout: float = Field(5.0, gt=0, le=300)
    warn_after_ms: int | None = Field(None, ge=0)
    name: str | None = None


class TcpCheckInput(BaseModel):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    timeout: float = Field(5.0, gt=0, le=300)
    name: str | None = None


class DnsCheckInput(BaseModel):
    hostname: str = Field(min_length=1)
    expected: list[str] = []
    timeout: float = Field(5.0, gt=0, le=300)
    name: str | None = None


class SqlCheckInput(BaseModel):
    query: str = Field(min_length=1)
    timeout: float = Field(5.0, gt=0, le=300)
    on_rows: CheckStatus = "ok"
    on_empty: CheckStatus = "ok"
    name: str | None = None


class CommandInput(BaseModel):
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(30.0, gt=0, le=3600)
    name: str | None = None
    cwd: str | None = None
    env: dict[str, str] = {}
    ok_exit_codes: list[int] = [0]
    warn_exit_codes: list[int] = []


class DiagnosticsInput(BaseModel):
    checks: list[Check]


async def _http_check(ctx: StepContext, inp: HttpCheckInput) -> Check:
    return await check_http(**inp.model_dump())


async def _tcp_check(ctx: StepContext, inp: TcpCheckInput) -> Check:
    return await check_tcp(**inp.model_dump())


async def _dns_check(ctx: StepContext, inp: DnsCheckInput) -> Check:
    return await check_dns(**inp.model_dump())


async def _sql_check(ctx: StepContext, inp: SqlCheckInput) -> Check:
    return await ctx.provider(RunbookProvider).query(
        inp.query,
        timeout=inp.timeout,
        on_rows=inp.on_rows,
        on_empty=inp.on_empty,
        name=inp.name,
    )


async def _run_command(ctx: StepContext, inp: CommandInput) -> Check:
    return await ctx.provider(RunbookProvider).run(**inp.model_dump())


async def _diagnostics(ctx: StepContext, inp: DiagnosticsInput) -> DiagnosticsSummary:
    return summarise(inp.checks)


def http_check(
    *,
    url: Bind[str],
    expected_status: Bind[int] | Bind[list[int]] | None = None,
    contains: Bind[str] | None = None,
    timeout: Bind[float] | None = None,
    warn_after_ms: Bind[int] | None = None,
    name: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
) -> Node:
    """GET ``url``; ok on an expected status (default 200), warn when slower than asked."""
    return provider_node(
        "runbook.http_check",
        _http_check,
        HttpCheckInput,
        Check,
        {
            "url": url,
            "expected_status": expected_status,
            "contains": contains,
            "timeout": timeout,
            "warn_after_ms": warn_after_ms,
            "name": name,
        },
        retry=retry,
    )


def tcp_check(
    *,
    host: Bind[str],
    port: Bind[int],
    timeout: Bind[float] | None = None,
    name: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
) -> Node:
    """Connect to ``host:port``."""
    return provider_node(
        "runbook.tcp_check",
        _tcp_check,
        TcpCheckInput,
        Check,
        {"host": host, "port": port, "timeout": timeout, "name": name},
        retry=retry,
    )


def dns_check(
    *,
    hostname: Bind[str],
    expected: Bind[list[str]] | None = None,
    timeout: Bind[float] | None = None,
    name: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
) -> Node:
    """Resolve ``hostname`` (optionally requiring ``expected`` addresses)."""
    return provider_node(
        "runbook.dns_check",
        _dns_check,
        DnsCheckInput,
        Check,
        {"hostname": hostname, "expected": expected, "timeout": timeout, "name": name},
        retry=retry,
    )


def sql_check(
    *,
    query: Bind[str],
    timeout: Bind[float] | None = None,
    on_rows: Bind[CheckStatus] | None = None,
    on_empty: Bind[CheckStatus] | None = None,
    name: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
) -> Node:
    """Run a read-only query against ``RESOLUTE_RUNBOOK_DATABASE_URL``; status by rows."""
    return provider_node(
        "runbook.sql_check",
        _sql_check,
        SqlCheckInput,
        Check,
        {
            "query": query,
            "timeout": timeout,
            "on_rows": on_rows,
            "on_empty": on_empty,
            "name": name,
        },
        retry=retry,
    )


def run_command(
    *,
    argv: Bind[list[str]],
    timeout: Bind[float] | None = None,
    name: Bind[str] | None = None,
    cwd: Bind[str] | None = None,
    env: Bind[dict[str, str]] | None = None,
    ok_exit_codes: Bind[list[int]] | None = None,
    warn_exit_codes: Bind[list[int]] | None = None,
    retry: RetryPolicy | None = None,
) -> Node:
    """Run an allowlisted executable with an argument list (never a shell string)."""
    return provider_node(
        "runbook.run_command",
        _run_command,
        CommandInput,
        Check,
        {
            "argv": argv,
            "timeout": timeout,
            "name": name,
            "cwd": cwd,
            "env": env,
            "ok_exit_codes": ok_exit_codes,
            "warn_exit_codes": warn_exit_codes,
        },
        retry=retry,
    )


def diagnostics(*, checks: Bind[list[Check]] | list[Any]) -> Node:
    """``summarise`` as a node: ``diagnostics(checks=[Output("api"), Output("db")])``."""
    return provider_node(
        "runbook.diagnostics",
        _diagnostics,
        DiagnosticsInput,
        DiagnosticsSummary,
        {"checks": checks},
        retry=RetryPolicy(max_attempts=1),
    )

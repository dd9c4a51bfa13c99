"""Post-mortems from the audit trail: an incident's timeline and metrics, as data and
as a Markdown draft. Reads the ``incident_timeline`` and ``incident_metrics`` views."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from .database import create_engine, resolve_database_url
from .store import Store

__all__ = [
    "AuditTrail",
    "IncidentMetrics",
    "IncidentReport",
    "TimelineEntry",
    "render_markdown",
]


class TimelineEntry(BaseModel):
    at: datetime
    flow: str
    run_id: str
    seq: int
    type: str
    step: str | None
    summary: str | None
    actor: str


class IncidentMetrics(BaseModel):
    incident: str
    triggered_at: datetime | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    time_to_acknowledge: timedelta | None = None
    time_to_resolve: timedelta | None = None
    auto_remediated: bool = False
    escalated: bool = False
    diagnostics_run: int = 0


class IncidentReport(BaseModel):
    incident: str
    metrics: IncidentMetrics | None
    timeline: list[TimelineEntry]


class AuditTrail:
    """Read side of the audit trail. Also a provider: register it on a worker and a
    step can read its incident's history with ``ctx.provider(AuditTrail)``."""

    name = "audit"

    def __init__(self, database_url: str | None = None, *, store: Store | None = None) -> None:
        self._url = database_url
        self._store = store

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(create_engine(resolve_database_url(self._url), pool_size=2))
        return self._store

    async def incidents(self, limit: int = 50) -> list[IncidentMetrics]:
        return [IncidentMetrics.model_validate(r) for r in await self.store.incidents(None, limit)]

    async def report(self, incident: str) -> IncidentReport:
        metrics = await self.store.incidents(incident, 1)
        timeline = await self.store.incident_timeline(incident)
        return IncidentReport(
            incident=incident,
            metrics=IncidentMetrics.model_validate(metrics[0]) if metrics else None,
            timeline=[TimelineEntry.model_validate(r) for r in timeline],
        )

    async def close(self) -> None:
        if self._store is not None:
            await self._store.engine.dispose()


def _duration(d: timedelta | None) -> str:
    if d is None:
        return "n/a"
    seconds = int(d.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "n/a"


def render_markdown(report: IncidentReport) -> str:
    """A post-mortem draft: summary, metrics, what acted, the full timeline."""
    m = report.metrics or IncidentMetrics(incident=report.incident)
    flows = sorted({e.flow for e in report.timeline})
    actors = sorted({e.actor for e in report.timeline})
    actions = [
        e for e in report.timeline if e.type in ("step.completed", "step.failed", "run.cancelled")
    ]
    lines = [
        f"# Post-mortem: incident {report.incident}",
        "",
        "## Summary",
        "",
        f"- Triggered: {_when(m.triggered_at)}",
        f"- Acknowledged: {_when(m.acknowledged_at)} (time to acknowledge: "
        f"{_duration(m.time_to_acknowledge)})",
        f"- Resolved: {_when(m.resolved_at)} (time to resolve: {_duration(m.time_to_resolve)})",
        f"- Auto-remediated: {'yes' if m.auto_remediated else 'no'}",
        f"- Escalated: {'yes' if m.escalated else 'no'}",
        f"- Diagnostics run: {m.diagnostics_run}",
        f"- Flows involved: {', '.join(flows) or 'none'}",
        f"- Who or what acted: {', '.join(actors) or 'nobody'}",
        "",
        "## Actions",
        "",
    ]
    lines += [f"- {_when(e.at)} [{e.flow}] {e.summary}" for e in actions] or ["- none recorded"]
    lines += ["", "## Timeline", "", "| time | flow | event | actor |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {_when(e.at)} | {e.flow} | {(e.summary or e.type).replace('|', '/')} | {e.actor} |"
        for e in report.timeline
    ]
    lines += [
        "",
        "## Follow-ups",
        "",
        "- Root cause:",
        "- What went well:",
        "- What to improve:",
        "",
    ]
    return "\n".join(lines)

"""Audit trail: a hash chain over each run's events, and the post-mortem views.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The canonical text of an event, hashed with its predecessor's hash. `resolute audit
# verify` recomputes exactly this, so any edit made behind the append-only trigger shows.
EVENT_HASH = """
CREATE FUNCTION resolute_event_hash(prev bytea, e run_events) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(coalesce(prev, '\\x'::bytea) || convert_to(concat_ws('|',
        e.run_id::text, e.seq::text, e.type, coalesce(e.node_path, ''), coalesce(e.step, ''),
        coalesce(e.attempt::text, ''), e.data::text,
        to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        coalesce(e.worker_id, '')), 'UTF8'))
$$
"""

CHAIN = """
CREATE FUNCTION resolute_chain_event() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prev bytea;
BEGIN
    IF NEW.seq > 1 THEN
        SELECT hash INTO prev FROM run_events WHERE run_id = NEW.run_id AND seq = NEW.seq - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'run %: event % appended before event %', NEW.run_id, NEW.seq,
                NEW.seq - 1 USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    NEW.hash := resolute_event_hash(prev, NEW);
    RETURN NEW;
END $$
"""

SUMMARY = """
CASE e.type
    WHEN 'run.started' THEN 'run started by ' || coalesce(e.data->>'trigger', 'manual')
    WHEN 'run.resumed' THEN 'resumed (' || (e.data->>'reason') || ')'
        || coalesce(' after ' || (e.data->>'previous_worker'), '')
    WHEN 'run.completed' THEN 'run completed'
    WHEN 'run.failed' THEN 'run failed: ' || (e.data->>'error')
    WHEN 'run.cancelled' THEN 'run cancelled: ' || (e.data->>'reason')
    WHEN 'step.started' THEN 'started ' || e.step || ' (' || (e.data->>'node') || ', attempt '
        || e.attempt || ')'
    WHEN 'step.completed' THEN 'completed ' || e.step
        || coalesce(' in ' || round((e.data->>'duration_ms')::numeric) || ' ms', '')
    WHEN 'step.failed' THEN 'failed ' || e.step || ': ' || (e.data->>'error')
        || CASE WHEN e.data->>'next_attempt_at' IS NOT NULL
                THEN ' (retry at ' || (e.data->>'next_attempt_at') || ')' ELSE '' END
    WHEN 'step.cancelled' THEN 'cancelled ' || e.step || ': ' || (e.data->>'reason')
    WHEN 'branch.decided' THEN 'decided ' || (e.data->>'label')
    WHEN 'parallel.started' THEN 'parallel block of ' || (e.data->>'branches') || ' branches'
    WHEN 'parallel.completed' THEN 'parallel block ' || (e.data->>'status')
    WHEN 'timer.started' THEN 'timer ' || e.step || ' until ' || (e.data->>'fire_at')
    WHEN 'timer.fired' THEN 'timer ' || e.step || ' fired'
    WHEN 'signal.waiting' THEN 'waiting for ' || (e.data->>'name')
        || coalesce(' until ' || (e.data->>'timeout_at'), '')
    WHEN 'signal.received' THEN 'received ' || (e.data->>'name')
    WHEN 'signal.timed_out' THEN 'gave up waiting for ' || (e.data->>'name')
    ELSE e.type
END
"""

AUDIT_TIMELINE = f"""
CREATE VIEW audit_timeline AS
SELECT e.run_id, r.flow, r.correlation_key AS incident, e.seq, e.recorded_at AS at, e.type,
       e.step, e.attempt, {SUMMARY} AS summary,
       coalesce(e.data->>'by', e.worker_id, 'resolute') AS actor, e.worker_id
  FROM run_events e JOIN flow_runs r USING (run_id)
"""

INCIDENT_TIMELINE = """
CREATE VIEW incident_timeline AS
SELECT incident, at, flow, run_id, seq, type, step, summary, actor
  FROM audit_timeline
 WHERE incident IS NOT NULL
 ORDER BY incident, at, run_id, seq
"""

# Per incident (correlation key). The times come from the PagerDuty events that started
# or reached the runs (their occurred_at, else when Resolute received them); remediation,
# escalation and diagnostics are read from the steps aliased `remediation`,
# `escalation` and `diagnostics` (docs/postmortem-queries.md).
INCIDENT_METRICS = """
CREATE VIEW incident_metrics AS
WITH pd AS (
    SELECT r.correlation_key AS incident, r.input->'event'->>'event_type' AS event_type,
           coalesce((r.input->'event'->>'occurred_at')::timestamptz, r.created_at) AS at
      FROM flow_runs r
     WHERE r.correlation_key IS NOT NULL AND r.input->'event'->>'event_type' IS NOT NULL
    UNION ALL
    SELECT r.correlation_key, e.data->>'name',
           coalesce((e.data->'payload'->'event'->>'occurred_at')::timestamptz, e.recorded_at)
      FROM run_events e JOIN flow_runs r USING (run_id)
     WHERE e.type = 'signal.received' AND r.correlation_key IS NOT NULL
), times AS (
    SELECT incident,
           min(at) FILTER (WHERE event_type = 'incident.triggered') AS triggered_at,
           min(at) FILTER (WHERE event_type = 'incident.acknowledged') AS acknowledged_at,
           min(at) FILTER (WHERE event_type = 'incident.resolved') AS resolved_at
      FROM pd GROUP BY incident
), steps AS (
    SELECT r.correlation_key AS incident,
           bool_or(e.step = 'remediation' AND e.type = 'step.completed'
                   AND coalesce((e.data->'output'->>'success')::boolean, true))
               AS auto_remediated,
           bool_or(e.step = 'escalation' AND e.type = 'step.completed') AS escalated,
           count(*) FILTER (WHERE e.step = 'diagnostics' AND e.type = 'step.completed')
               AS diagnostics_run,
           min(e.recorded_at) FILTER (WHERE e.step = 'resolve-event' AND e.type = 'step.completed')
               AS auto_resolved_at
      FROM run_events e JOIN flow_runs r USING (run_id)
     WHERE r.correlation_key IS NOT NULL
     GROUP BY r.correlation_key
)
SELECT t.incident, t.triggered_at, t.acknowledged_at,
       coalesce(t.resolved_at, s.auto_resolved_at) AS resolved_at,
       t.acknowledged_at - t.triggered_at AS time_to_acknowledge,
       coalesce(t.resolved_at, s.auto_resolved_at) - t.triggered_at AS time_to_resolve,
       coalesce(s.auto_remediated, false) AS auto_remediated,
       coalesce(s.escalated, false) AS escalated,
       coalesce(s.diagnostics_run, 0) AS diagnostics_run
  FROM times t LEFT JOIN steps s USING (incident)
"""


def upgrade() -> None:
    op.execute("ALTER TABLE run_events ADD COLUMN hash bytea")
    op.execute(EVENT_HASH)
    # Chain the events already there (the append-only trigger is lifted for this alone).
    op.execute("ALTER TABLE run_events DISABLE TRIGGER run_events_append_only")
    op.execute(
        """
        DO $$
        DECLARE
            r run_events;
            prev bytea;
            last uuid;
        BEGIN
            FOR r IN SELECT * FROM run_events ORDER BY run_id, seq LOOP
                IF last IS DISTINCT FROM r.run_id THEN prev := NULL; last := r.run_id; END IF;
                prev := resolute_event_hash(prev, r);
                UPDATE run_events SET hash = prev WHERE run_id = r.run_id AND seq = r.seq;
            END LOOP;
        END $$
        """
    )
    op.execute("ALTER TABLE run_events ENABLE TRIGGER run_events_append_only")
    op.execute("ALTER TABLE run_events ALTER COLUMN hash SET NOT NULL")
    op.execute(CHAIN)
    op.execute(
        "CREATE TRIGGER run_events_chain BEFORE INSERT ON run_events "
        "FOR EACH ROW EXECUTE FUNCTION resolute_chain_event()"
    )
    op.execute(AUDIT_TIMELINE)
    op.execute(INCIDENT_TIMELINE)
    op.execute(INCIDENT_METRICS)


def downgrade() -> None:
    op.execute("DROP VIEW incident_metrics")
    op.execute("DROP VIEW incident_timeline")
    op.execute("DROP VIEW audit_timeline")
    op.execute("DROP TRIGGER run_events_chain ON run_events")
    op.execute("DROP FUNCTION resolute_chain_event()")
    op.execute("ALTER TABLE run_events DISABLE TRIGGER run_events_append_only")
    op.execute("ALTER TABLE run_events DROP COLUMN hash")
    op.execute("ALTER TABLE run_events ENABLE TRIGGER run_events_append_only")
    op.execute("DROP FUNCTION resolute_event_hash(bytea, run_events)")

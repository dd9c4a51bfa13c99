"""Every SQL statement Resolute runs, named, in one place.

Each is a single statement, so in autocommit it is one round trip and one transaction.
The constraints do the concurrency work: ``(run_id, seq)`` is the primary key, the
fence compares the lease token and ``last_seq``, claims use ``SKIP LOCKED``.
"""

from __future__ import annotations

import functools

from sqlalchemy import TextClause, text

__all__ = [
    "APPEND",
    "AUDIT_VERIFY",
    "CANCEL",
    "CANCEL_CHANNEL",
    "CLAIM",
    "CORRELATED_OUTPUT",
    "DELIVERY_BY_ID",
    "EVENTS",
    "EVENTS_FOR_RUNS",
    "FLOW",
    "FLOWS",
    "GET_RUN",
    "HEARTBEAT",
    "INBOX",
    "INCIDENTS",
    "INCIDENT_TIMELINE",
    "LIST_RUNS",
    "NOTIFY_CHANNEL",
    "QUEUE_DEPTH",
    "RECLAIM_OWN",
    "RECORD_REJECTED_DELIVERY",
    "RECOVER_EXPIRED",
    "REGISTER_FLOW",
    "RELEASE_ALL",
    "RELEASE_RUN",
    "RETRY_RUN",
    "RUN_BY_IDEMPOTENCY_KEY",
    "RUN_COUNTS",
    "SCHEMA_VERSION",
    "SEND_SIGNAL",
    "SIGNAL_BY_IDEMPOTENCY_KEY",
    "SIGNAL_CHANNEL",
    "SIGNAL_FLOWS",
    "START_RUN",
    "record_delivery",
]

NOTIFY_CHANNEL = "resolute_runnable"
CANCEL_CHANNEL = "resolute_cancelled"
SIGNAL_CHANNEL = "resolute_signal"
_ACTIVE = "('pending', 'running', 'waiting')"
_TERMINAL = "('completed', 'failed', 'cancelled')"
_RUN_COLUMNS = (
    "run_id, flow, fingerprint, task_queue, status, input, correlation_key, idempotency_key, "
    "parent_run_id, lease_owner, lease_token, wake_at, last_seq, result, error, created_at, "
    "updated_at, completed_at"
)


def _signalled(targets: str) -> str:
    """The UPDATE by which a signal takes the row lock of the active runs it targets
    (``targets``: a FROM and/or WHERE that ends in AND): it bumps their signal_version,
    so it orders with any append to them, and makes a waiting run due at once."""
    return f"""
    UPDATE flow_runs r
       SET signal_version = r.signal_version + 1,
           wake_at = CASE WHEN r.status = 'waiting' THEN now() ELSE r.wake_at END,
           updated_at = now()
      {targets} r.status IN {_ACTIVE}
    RETURNING r.run_id, r.status = 'waiting' AS woken,
              CASE WHEN r.status = 'waiting' THEN pg_notify('{NOTIFY_CHANNEL}', r.task_queue) END"""


# The runs a signal (CTE ``sig``) is for: by id, by the run's correlation key, or by the
# key of one of its waits (``wait_for_signal(correlate=...)``), each through an index.
_SIGNALLED = _signalled(
    """WHERE r.run_id IN (SELECT sig.run_id FROM sig
                           UNION
                          SELECT k.run_id FROM sig JOIN flow_runs k USING (correlation_key)
                           UNION
                          SELECT e.run_id FROM sig JOIN run_events e
                              ON e.type = 'signal.waiting'
                             AND e.data ->> 'correlation_key' = sig.correlation_key)
       AND"""
)


def _signalled_since(status: str, seen: str) -> str:
    """Whether a run handed back as ``status`` was signalled after its owner read the
    inbox at version ``seen``: then it is due (and announced) at once."""
    return f"{status} = 'waiting' AND {seen} IS DISTINCT FROM r.signal_version"


def _sql(statement: str) -> TextClause:
    return text(statement.strip())


REGISTER_FLOW = _sql(
    """
INSERT INTO flows (name, task_queue, fingerprint, shape)
VALUES (:name, :task_queue, :fingerprint, CAST(:shape AS jsonb))
ON CONFLICT (name) DO UPDATE
   SET task_queue = EXCLUDED.task_queue, fingerprint = EXCLUDED.fingerprint,
       shape = EXCLUDED.shape, registered_at = now()
 WHERE (flows.task_queue, flows.fingerprint) IS DISTINCT FROM
       (EXCLUDED.task_queue, EXCLUDED.fingerprint)
"""
)

FLOW = _sql("SELECT name, task_queue, fingerprint FROM flows WHERE name = :name")
FLOWS = _sql("SELECT name FROM flows ORDER BY name")

# A new run and its run.started event, atomically; a repeated idempotency key inserts
# nothing (the caller then reads the existing run).
START_RUN = _sql(
    f"""
WITH run AS (
    INSERT INTO flow_runs (run_id, flow, fingerprint, task_queue, status, input,
                           correlation_key, idempotency_key, parent_run_id, last_seq)
    VALUES (:run_id, :flow, :fingerprint, :task_queue, 'pending', CAST(:input AS jsonb),
            :correlation_key, :idempotency_key, :parent_run_id, 1)
    ON CONFLICT (flow, idempotency_key) DO NOTHING
    RETURNING run_id, task_queue
), started AS (
    INSERT INTO run_events (run_id, seq, type, data)
    SELECT run_id, 1, 'run.started', CAST(:data AS jsonb) FROM run
)
SELECT run_id, pg_notify('{NOTIFY_CHANNEL}', task_queue) FROM run
"""
)

RUN_BY_IDEMPOTENCY_KEY = _sql(
    "SELECT run_id FROM flow_runs WHERE flow = :flow AND idempotency_key = :idempotency_key"
)

# Depth-first: runs already started (waking from a timer, retry or recovery) go before
# new ones, oldest first.
CLAIM = _sql(
    f"""
WITH picked AS (
    SELECT run_id, status AS prior_status, lease_token AS prior_token
      FROM flow_runs
     WHERE task_queue = :task_queue
       AND flow = ANY(CAST(:flows AS text[]))
       AND lease_owner IS NULL
       AND status IN {_ACTIVE}
       AND (status <> 'waiting' OR wake_at <= now())
     ORDER BY status = 'pending', COALESCE(wake_at, created_at)
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
)
UPDATE flow_runs r
   SET lease_owner = :worker_id, lease_token = nextval('resolute_lease_token'),
       updated_at = now()
  FROM picked
 WHERE r.run_id = picked.run_id
RETURNING r.run_id, r.flow, r.lease_token, r.last_seq, picked.prior_status, r.signal_version
"""
)

# A restarted worker with the same identity takes its runs back at once (new token, so
# a zombie of the old process is fenced out). Neither claim touches wake_at: should this
# owner die before its first append, the run must stay claimable when it is due.
RECLAIM_OWN = _sql(
    f"""
UPDATE flow_runs
   SET lease_token = nextval('resolute_lease_token'), updated_at = now()
 WHERE lease_owner = :worker_id AND status IN {_ACTIVE} AND flow = ANY(CAST(:flows AS text[]))
RETURNING run_id, flow, lease_token, last_seq, 'restart' AS prior_status, signal_version
"""
)

EVENTS_FOR_RUNS = _sql(
    """
SELECT run_id, seq, type, node_path, step, attempt, data, recorded_at, worker_id
  FROM run_events WHERE run_id = ANY(CAST(:run_ids AS uuid[])) ORDER BY run_id, seq
"""
)

EVENTS = _sql(
    """
SELECT seq, type, node_path, step, attempt, data, recorded_at, worker_id
  FROM run_events WHERE run_id = :run_id AND seq > :after ORDER BY seq
"""
)

# The hot path: one statement appends step boundaries' events and advances their runs'
# projections, of one run or of many (group commit). Each run is fenced on its own by
# its lease token and expected log end; only runs that pass get their events, in order
# (the hash-chain trigger needs seq n-1 before n). Returns the runs that passed.
APPEND = _sql(
    f"""
WITH boundary AS (
    SELECT *
      FROM unnest(CAST(:run_ids AS uuid[]), CAST(:lease_tokens AS bigint[]),
                  CAST(:expected_seqs AS int[]), CAST(:last_seqs AS int[]),
                  CAST(:statuses AS text[]), CAST(:wake_ats AS timestamptz[]),
                  CAST(:results AS jsonb[]), CAST(:errors AS text[]),
                  CAST(:releases AS boolean[]), CAST(:signal_versions AS bigint[]))
           AS b(run_id, lease_token, expected_seq, last_seq, status, wake_at, result, error,
                release, signal_version)
), fence AS (
    UPDATE flow_runs r
       SET last_seq = b.last_seq,
           status = b.status,
           wake_at = CASE WHEN {_signalled_since("b.status", "b.signal_version")} THEN now()
                          ELSE b.wake_at END,
           result = COALESCE(b.result, r.result),
           error = COALESCE(b.error, r.error),
           lease_owner = CASE WHEN b.release THEN NULL ELSE r.lease_owner END,
           lease_token = CASE WHEN b.release THEN NULL ELSE r.lease_token END,
           updated_at = now(),
           completed_at = CASE WHEN b.status IN {_TERMINAL} THEN now() END
      FROM boundary b
     WHERE r.run_id = b.run_id AND r.lease_token = b.lease_token
       AND r.last_seq = b.expected_seq
    RETURNING r.run_id,
              CASE WHEN {_signalled_since("b.status", "b.signal_version")}
                   THEN pg_notify('{NOTIFY_CHANNEL}', r.task_queue) END
), appended AS (
    INSERT INTO run_events (run_id, seq, type, node_path, step, attempt, data, worker_id)
    SELECT e.run_id, e.seq, e.type, e.node_path, e.step, e.attempt, e.data, :worker_id
      FROM unnest(CAST(:event_runs AS uuid[]), CAST(:seqs AS int[]), CAST(:types AS text[]),
                  CAST(:node_paths AS text[]), CAST(:steps AS text[]),
                  CAST(:attempts AS int[]), CAST(:datas AS jsonb[]))
           WITH ORDINALITY AS e(run_id, seq, type, node_path, step, attempt, data, n)
     WHERE e.run_id IN (SELECT run_id FROM fence)
     ORDER BY e.n
)
SELECT run_id FROM fence
"""
)

# Cancelling takes the run away from whoever holds it: the new last_seq fences them out.
CANCEL = _sql(
    f"""
WITH fence AS (
    UPDATE flow_runs
       SET status = 'cancelled', error = :reason, lease_owner = NULL, lease_token = NULL,
           wake_at = NULL, last_seq = last_seq + 1, updated_at = now(), completed_at = now()
     WHERE run_id = :run_id AND status NOT IN {_TERMINAL}
    RETURNING run_id, last_seq
)
INSERT INTO run_events (run_id, seq, type, data, worker_id)
SELECT run_id, last_seq, 'run.cancelled', CAST(:data AS jsonb), :by FROM fence
RETURNING seq, pg_notify('{CANCEL_CHANNEL}', CAST(run_id AS text))
"""
)

HEARTBEAT = _sql(
    """
INSERT INTO workers (worker_id, task_queues, hostname, pid)
VALUES (:worker_id, CAST(:task_queues AS text[]), :hostname, :pid)
ON CONFLICT (worker_id) DO UPDATE
   SET heartbeat_at = now(), task_queues = EXCLUDED.task_queues,
       hostname = EXCLUDED.hostname, pid = EXCLUDED.pid
"""
)

# Runs whose owner stopped heartbeating become claimable; the cleared token fences the
# old owner out should it come back.
RECOVER_EXPIRED = _sql(
    f"""
UPDATE flow_runs r
   SET lease_owner = NULL, lease_token = NULL, updated_at = now()
 WHERE r.lease_owner IS NOT NULL
   AND r.status IN {_ACTIVE}
   AND NOT EXISTS (
         SELECT 1 FROM workers w
          WHERE w.worker_id = r.lease_owner
            AND w.heartbeat_at > now() - make_interval(secs => :lease_seconds))
RETURNING r.run_id, r.task_queue, pg_notify('{NOTIFY_CHANNEL}', r.task_queue)
"""
)

RELEASE_ALL = _sql(
    f"""
UPDATE flow_runs SET lease_owner = NULL, lease_token = NULL, updated_at = now()
 WHERE lease_owner = :worker_id AND status IN {_ACTIVE}
RETURNING run_id, pg_notify('{NOTIFY_CHANNEL}', task_queue)
"""
)

# Hand a run back while it waits, when there was nothing to append.
_RELEASED = _signalled_since("CAST(:status AS text)", "CAST(:signal_version AS bigint)")
RELEASE_RUN = _sql(
    f"""
UPDATE flow_runs r
   SET lease_owner = NULL, lease_token = NULL, status = :status,
       wake_at = CASE WHEN {_RELEASED} THEN now() ELSE CAST(:wake_at AS timestamptz) END,
       updated_at = now()
 WHERE run_id = :run_id AND lease_token = :lease_token
RETURNING CASE WHEN {_RELEASED} THEN pg_notify('{NOTIFY_CHANNEL}', r.task_queue) END
"""
)

GET_RUN = _sql(f"SELECT {_RUN_COLUMNS} FROM flow_runs WHERE run_id = CAST(:run_id AS uuid)")

# Keyset paging, newest first: the cursor is the last row's (created_at, run_id).
LIST_RUNS = _sql(
    f"""
SELECT {_RUN_COLUMNS} FROM flow_runs
 WHERE (CAST(:flow AS text) IS NULL OR flow = :flow)
   AND (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:correlation_key AS text) IS NULL OR correlation_key = :correlation_key)
   AND (CAST(:since AS timestamptz) IS NULL OR created_at >= :since)
   AND (CAST(:until AS timestamptz) IS NULL OR created_at < :until)
   AND (CAST(:after_created AS timestamptz) IS NULL
        OR (created_at, run_id) < (:after_created, CAST(:after_run AS uuid)))
 ORDER BY created_at DESC, run_id DESC
 LIMIT :limit
"""
)

# A failed run goes back to work from its failed step; the new last_seq fences out
# anything still holding the old log position.
RETRY_RUN = _sql(
    f"""
WITH fence AS (
    UPDATE flow_runs
       SET status = 'running', error = NULL, lease_owner = NULL, lease_token = NULL,
           wake_at = NULL, completed_at = NULL, last_seq = last_seq + 1, updated_at = now()
     WHERE run_id = CAST(:run_id AS uuid) AND status = 'failed'
    RETURNING run_id, last_seq, task_queue
)
INSERT INTO run_events (run_id, seq, type, data, worker_id)
SELECT run_id, last_seq, 'run.resumed', CAST(:data AS jsonb), :by FROM fence
RETURNING seq, pg_notify('{NOTIFY_CHANNEL}', (SELECT task_queue FROM fence))
"""
)

# Signals: kept in the inbox until a run's wait consumes them (recorded in its log).
SEND_SIGNAL = _sql(
    f"""
WITH sig AS (
    INSERT INTO signals (name, run_id, correlation_key, payload, idempotency_key, sent_by)
    VALUES (:name, CAST(:run_id AS uuid), :correlation_key, CAST(:payload AS jsonb),
            :idempotency_key, :sent_by)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, run_id, correlation_key
), woken AS ({_SIGNALLED}
)
SELECT id, pg_notify('{SIGNAL_CHANNEL}', COALESCE(CAST(run_id AS text), 'key:' || correlation_key)),
       (SELECT count(*) FROM woken WHERE woken) AS woken
  FROM sig
"""
)

SIGNAL_BY_IDEMPOTENCY_KEY = _sql("SELECT id FROM signals WHERE idempotency_key = :idempotency_key")

SIGNAL_FLOWS = _sql(
    """
SELECT name FROM flows
 WHERE shape -> 'triggers'
       @> jsonb_build_array(jsonb_build_object('kind', 'signal', 'name', CAST(:name AS text)))
 ORDER BY name
"""
)

# The run's signal_version (one row even with no signal) and its unconsumed signals,
# read in one snapshot: a later signal moves the version past what the worker saw.
INBOX = _sql(
    """
SELECT r.signal_version, s.id, s.name, s.run_id, s.correlation_key, s.payload, s.sent_at
  FROM flow_runs r
  LEFT JOIN signals s
    ON s.name = ANY(CAST(:names AS text[]))
   AND (s.run_id = r.run_id OR s.correlation_key = ANY(CAST(:keys AS text[])))
   AND s.id <> ALL(CAST(:consumed AS bigint[]))
 WHERE r.run_id = CAST(:run_id AS uuid)
 ORDER BY s.id
"""
)

# An accepted webhook delivery in one statement (one round trip, one transaction): the
# delivery row with the runs it starts (run.started events included) and the signals it
# sends to its flows' active runs (deliver_to_active, waking them), and their ids.
# - Already stored (same route and delivery id): writes nothing, returns it as `prior`.
# - Stored by a statement that committed after this one's snapshot: every insert below
#   waits on the first delivery's keys (runs, signals, then the delivery itself, in the
#   same order in both) and does nothing; no row is returned, the caller reads it with
#   DELIVERY_BY_ID.
# - A run target whose flow is not registered: writes nothing, returns it as `missing`.
# A run or signal left by an earlier delivery of the same id (its row since deleted) is
# reused, never duplicated. The started event's fields come from the `started` template
# (RunStarted) with flow, fingerprint and input filled in here. The targets are the
# elements of the arrays, one VALUES row each (see record_delivery).
_RECORD_DELIVERY = f"""
WITH input AS MATERIALIZED (
    SELECT CAST(:body AS jsonb) AS body
), prior AS (
    SELECT id, run_ids, signal_ids FROM webhook_deliveries
     WHERE route = CAST(:route AS text) AND delivery_id = CAST(:delivery_id AS text)
       AND verification <> 'failed'
), target AS MATERIALIZED (
    SELECT t.ord, t.flow, t.signal_name, f.task_queue, f.fingerprint,
           CASE WHEN t.to_active AND CAST(:correlation_key AS text) IS NOT NULL THEN (
               SELECT r.run_id FROM flow_runs r
                WHERE r.flow = t.flow AND r.correlation_key = CAST(:correlation_key AS text)
                  AND r.status IN {_ACTIVE}
                ORDER BY r.created_at LIMIT 1)
           END AS active_run
      FROM (SELECT v.ord, (CAST(:flows AS text[]))[v.ord] AS flow,
                   (CAST(:to_active AS boolean[]))[v.ord] AS to_active,
                   (CAST(:signal_names AS text[]))[v.ord] AS signal_name
              FROM {{targets}} AS v(ord)) t
      LEFT JOIN flows f ON f.name = t.flow
), missing AS (
    SELECT flow FROM target WHERE active_run IS NULL AND fingerprint IS NULL
     ORDER BY ord LIMIT 1
), go AS (
    SELECT WHERE NOT EXISTS (SELECT FROM prior) AND NOT EXISTS (SELECT FROM missing)
), run AS (
    INSERT INTO flow_runs (run_id, flow, fingerprint, task_queue, status, input,
                           correlation_key, idempotency_key, last_seq)
    SELECT gen_random_uuid(), t.flow, t.fingerprint, t.task_queue, 'pending', input.body,
           CAST(:correlation_key AS text), CAST(:idempotency_key AS text), 1
      FROM go, target t, input
     WHERE t.active_run IS NULL
     ORDER BY t.ord
    ON CONFLICT (flow, idempotency_key) DO NOTHING
    RETURNING run_id, flow, fingerprint, pg_notify('{NOTIFY_CHANNEL}', task_queue)
), started AS (
    INSERT INTO run_events (run_id, seq, type, data)
    SELECT run.run_id, 1, 'run.started',
           CAST(:started AS jsonb) || jsonb_build_object(
               'flow', run.flow, 'fingerprint', run.fingerprint, 'input', input.body)
      FROM run, input
), sig AS (
    INSERT INTO signals (name, run_id, correlation_key, payload, idempotency_key, sent_by)
    SELECT t.signal_name, t.active_run, CAST(:correlation_key AS text), input.body,
           CAST(:idempotency_key AS text) || ':' || t.flow, 'webhook'
      FROM go, target t, input
     WHERE t.active_run IS NOT NULL
     ORDER BY t.ord
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, run_id, correlation_key, idempotency_key,
              pg_notify('{SIGNAL_CHANNEL}', CAST(run_id AS text))
), woken AS (
    -- the signalled runs and the runs of their incident, by index, none without a signal
    {_SIGNALLED}
), outcome AS (
    SELECT t.ord,
           CASE WHEN t.active_run IS NULL THEN COALESCE(
               (SELECT run.run_id FROM run WHERE run.flow = t.flow),
               (SELECT r.run_id FROM flow_runs r
                 WHERE r.flow = t.flow AND r.idempotency_key = CAST(:idempotency_key AS text)))
           END AS run_id,
           CASE WHEN t.active_run IS NOT NULL THEN COALESCE(
               (SELECT sig.id FROM sig
                 WHERE sig.idempotency_key = CAST(:idempotency_key AS text) || ':' || t.flow),
               (SELECT s.id FROM signals s
                 WHERE s.idempotency_key = CAST(:idempotency_key AS text) || ':' || t.flow))
           END AS signal_id
      FROM go, target t
), delivery AS (
    INSERT INTO webhook_deliveries (route, delivery_id, headers, body, verification,
                                    correlation_key, run_ids, signal_ids)
    SELECT CAST(:route AS text), CAST(:delivery_id AS text), CAST(:headers AS jsonb),
           input.body, CAST(:verification AS text), CAST(:correlation_key AS text),
           ARRAY(SELECT run_id FROM outcome WHERE run_id IS NOT NULL ORDER BY ord),
           ARRAY(SELECT signal_id FROM outcome WHERE signal_id IS NOT NULL ORDER BY ord)
      FROM go, input
    ON CONFLICT (route, delivery_id) WHERE verification <> 'failed' DO NOTHING
    RETURNING id, run_ids, signal_ids
)
SELECT id, run_ids, signal_ids, false AS duplicate, CAST(NULL AS text) AS missing,
       (SELECT count(*) FROM woken WHERE woken) AS woken
  FROM delivery
 UNION ALL
SELECT id, run_ids, signal_ids, true, NULL, 0 FROM prior
 UNION ALL
SELECT NULL, NULL, NULL, NULL, flow, 0 FROM missing
"""


@functools.cache
def record_delivery(targets: int) -> TextClause:
    """The delivery statement for a route with ``targets`` flows. A VALUES row per target
    tells the planner how many there are, so PostgreSQL settles on a generic plan after a
    few executions, planned once per connection; over an array of unknown length it
    expected 100 and re-planned this statement on every delivery (0.5 ms)."""
    rows = ", ".join(f"({i})" for i in range(1, targets + 1))
    return _sql(
        _RECORD_DELIVERY.replace(
            "{targets}", f"(VALUES {rows})" if rows else "(SELECT 1 WHERE false)"
        )
    )


# A delivery that failed verification: kept for the audit, without its body.
RECORD_REJECTED_DELIVERY = _sql(
    """
INSERT INTO webhook_deliveries (route, delivery_id, headers, body, verification,
                                correlation_key, error)
VALUES (:route, :delivery_id, CAST(:headers AS jsonb), CAST(:body AS jsonb), :verification,
        :correlation_key, :error)
ON CONFLICT (route, delivery_id) WHERE verification <> 'failed' DO NOTHING
RETURNING id
"""
)

DELIVERY_BY_ID = _sql(
    """
SELECT id, run_ids, signal_ids FROM webhook_deliveries
 WHERE route = :route AND delivery_id = :delivery_id AND verification <> 'failed'
"""
)

RUN_COUNTS = _sql("SELECT flow, status, count(*) AS n FROM flow_runs GROUP BY flow, status")

QUEUE_DEPTH = _sql(
    f"""
SELECT task_queue, count(*) AS n FROM flow_runs
 WHERE lease_owner IS NULL AND status IN {_ACTIVE} AND (status <> 'waiting' OR wake_at <= now())
 GROUP BY task_queue
"""
)

SCHEMA_VERSION = _sql("SELECT version_num FROM alembic_version")

# The newest output an earlier run of the same incident recorded under an alias.
CORRELATED_OUTPUT = _sql(
    """
SELECT e.data -> 'output' AS output
  FROM flow_runs r JOIN run_events e USING (run_id)
 WHERE r.correlation_key = :correlation_key AND r.run_id <> CAST(:exclude_run AS uuid)
   AND (CAST(:flow AS text) IS NULL OR r.flow = :flow)
   AND e.type = 'step.completed' AND e.step = :alias
 ORDER BY e.recorded_at DESC
 LIMIT 1
"""
)

INCIDENTS = _sql(
    """
SELECT incident, triggered_at, acknowledged_at, resolved_at, time_to_acknowledge,
       time_to_resolve, auto_remediated, escalated, diagnostics_run
  FROM incident_metrics
 WHERE CAST(:incident AS text) IS NULL OR incident = :incident
 ORDER BY triggered_at DESC NULLS LAST, incident
 LIMIT :limit
"""
)

INCIDENT_TIMELINE = _sql(
    """
SELECT incident, at, flow, CAST(run_id AS text) AS run_id, seq, type, step, summary, actor
  FROM incident_timeline WHERE incident = :incident
"""
)

# Recompute each event's hash from its predecessor's stored hash; report the first link
# per run that does not hold (an edited, deleted or reordered event).
AUDIT_VERIFY = _sql(
    """
WITH chain AS (
    SELECT e.run_id, e.seq, e.type,
           e.hash = resolute_event_hash(lag(e.hash) OVER w, e) AS hash_ok,
           e.seq = row_number() OVER w AS seq_ok
      FROM run_events e
     WHERE CAST(:run_id AS uuid) IS NULL OR e.run_id = CAST(:run_id AS uuid)
    WINDOW w AS (PARTITION BY e.run_id ORDER BY e.seq)
), broken AS (
    SELECT DISTINCT ON (run_id) run_id, seq, type, hash_ok, seq_ok
      FROM chain WHERE NOT (hash_ok AND seq_ok)
     ORDER BY run_id, seq
)
SELECT b.run_id, b.seq, b.type, b.hash_ok, b.seq_ok,
       (SELECT count(*) FROM chain) AS checked
  FROM broken b
 UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM chain)
 WHERE NOT EXISTS (SELECT 1 FROM broken)
"""
)

"""Every SQL statement Resolute runs, named, in one place.

Each is a single statement, so in autocommit it is one round trip and one transaction.
The constraints do the concurrency work: ``(run_id, seq)`` is the primary key, the
fence compares the lease token and ``last_seq``, claims use ``SKIP LOCKED``.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

__all__ = [
    "APPEND",
    "CANCEL",
    "CANCEL_CHANNEL",
    "CLAIM",
    "EVENTS",
    "EVENTS_FOR_RUNS",
    "FLOW",
    "FLOWS",
    "GET_RUN",
    "HEARTBEAT",
    "LIST_RUNS",
    "NOTIFY_CHANNEL",
    "RECLAIM_OWN",
    "RECOVER_EXPIRED",
    "REGISTER_FLOW",
    "RELEASE_ALL",
    "RELEASE_RUN",
    "RUN_BY_IDEMPOTENCY_KEY",
    "START_RUN",
]

NOTIFY_CHANNEL = "resolute_runnable"
CANCEL_CHANNEL = "resolute_cancelled"
_ACTIVE = "('pending', 'running', 'waiting')"
_TERMINAL = "('completed', 'failed', 'cancelled')"
_RUN_COLUMNS = (
    "run_id, flow, fingerprint, task_queue, status, input, correlation_key, idempotency_key, "
    "parent_run_id, lease_owner, lease_token, wake_at, last_seq, result, error, created_at, "
    "updated_at, completed_at"
)


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
       wake_at = NULL, updated_at = now()
  FROM picked
 WHERE r.run_id = picked.run_id
RETURNING r.run_id, r.flow, r.lease_token, r.last_seq, picked.prior_status
"""
)

# A restarted worker with the same identity takes its runs back at once (new token, so
# a zombie of the old process is fenced out).
RECLAIM_OWN = _sql(
    f"""
UPDATE flow_runs
   SET lease_token = nextval('resolute_lease_token'), wake_at = NULL, updated_at = now()
 WHERE lease_owner = :worker_id AND status IN {_ACTIVE} AND flow = ANY(CAST(:flows AS text[]))
RETURNING run_id, flow, lease_token, last_seq, 'restart' AS prior_status
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

# The hot path: one statement appends a step boundary's events and advances the run's
# projection, only while this writer holds the lease and the log is where it expects.
APPEND = _sql(
    f"""
WITH fence AS (
    UPDATE flow_runs
       SET last_seq = :last_seq,
           status = :status,
           wake_at = :wake_at,
           result = COALESCE(CAST(:result AS jsonb), result),
           error = COALESCE(:error, error),
           lease_owner = CASE WHEN :release THEN NULL ELSE lease_owner END,
           lease_token = CASE WHEN :release THEN NULL ELSE lease_token END,
           updated_at = now(),
           completed_at = CASE WHEN :status IN {_TERMINAL} THEN now() END
     WHERE run_id = :run_id AND lease_token = :lease_token AND last_seq = :expected_seq
    RETURNING run_id
)
INSERT INTO run_events (run_id, seq, type, node_path, step, attempt, data, worker_id)
SELECT fence.run_id, e.seq, e.type, e.node_path, e.step, e.attempt, e.data, :worker_id
  FROM fence,
       unnest(CAST(:seqs AS int[]), CAST(:types AS text[]), CAST(:node_paths AS text[]),
              CAST(:steps AS text[]), CAST(:attempts AS int[]), CAST(:datas AS jsonb[]))
           AS e(seq, type, node_path, step, attempt, data)
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
RELEASE_RUN = _sql(
    """
UPDATE flow_runs
   SET lease_owner = NULL, lease_token = NULL, status = :status, wake_at = :wake_at,
       updated_at = now()
 WHERE run_id = :run_id AND lease_token = :lease_token
"""
)

GET_RUN = _sql(f"SELECT {_RUN_COLUMNS} FROM flow_runs WHERE run_id = CAST(:run_id AS uuid)")

LIST_RUNS = _sql(
    f"""
SELECT {_RUN_COLUMNS} FROM flow_runs
 WHERE (CAST(:flow AS text) IS NULL OR flow = :flow)
   AND (CAST(:status AS text) IS NULL OR status = :status)
   AND (CAST(:correlation_key AS text) IS NULL OR correlation_key = :correlation_key)
 ORDER BY created_at DESC, run_id
 LIMIT :limit
"""
)

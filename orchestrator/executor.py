"""Run one attempt of a node: timeout, output validation, retry classification.

The outcome is an event (``step.completed`` or ``step.failed`` with the next attempt's
time), ready to be appended with whatever the run decides next.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from pydantic_core import to_json

from . import events as ev
from .errors import StepTimeoutError
from .interpreter import Execute
from .node import StepContext

__all__ = ["execute"]


async def execute(job: Execute, ctx: StepContext, failures_so_far: int) -> ev.Event:
    step, node = job.step, job.step.node
    common = {"node_path": step.path, "step": step.alias, "attempt": job.attempt}
    began = time.perf_counter()
    try:
        if node.timeout is None:
            raw = await node.invoke(ctx, job.value)
        else:
            try:
                async with asyncio.timeout(node.timeout):
                    raw = await node.invoke(ctx, job.value)
            except TimeoutError:
                raise StepTimeoutError(
                    f"attempt {job.attempt} timed out after {node.timeout:g}s"
                ) from None
        try:
            output = node.output_adapter.dump_python(
                node.output_adapter.validate_python(raw), mode="json"
            )
        except ValidationError as exc:
            elapsed = (time.perf_counter() - began) * 1000
            ctx.logger.error("step returned the wrong type: %s", exc)
            return ev.StepFailed(
                **common,
                error=f"node {node.name!r} returned {type(raw).__name__}, which does not "
                f"match its declared output type: {exc}",
                error_type="OutputTypeError",
                retryable=False,
                duration_ms=elapsed,
            )
        if b"\\u0000" in to_json(output):
            # jsonb cannot hold NUL: appending this output would fail on every replay.
            return ev.StepFailed(
                **common,
                error=f"node {node.name!r} returned text containing a NUL character "
                "(\\u0000), which PostgreSQL cannot store; strip it in the node",
                error_type="OutputTypeError",
                retryable=False,
                duration_ms=(time.perf_counter() - began) * 1000,
            )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        elapsed = (time.perf_counter() - began) * 1000
        failures = failures_so_far + 1
        retryable = node.retry.retryable(exc)
        next_at = None
        if retryable and failures < node.retry.max_attempts:
            next_at = datetime.now(UTC) + timedelta(seconds=node.retry.delay(failures))
        ctx.logger.warning(
            "attempt %d failed (%s: %s)%s",
            job.attempt,
            type(exc).__name__,
            exc,
            f"; retrying at {next_at.isoformat()}" if next_at else "; giving up",
        )
        return ev.StepFailed(
            **common,
            error=str(exc) or type(exc).__name__,
            error_type=type(exc).__name__,
            retryable=retryable,
            next_attempt_at=next_at,
            duration_ms=elapsed,
        )
    return ev.StepCompleted(
        **common, output=output, duration_ms=(time.perf_counter() - began) * 1000
    )

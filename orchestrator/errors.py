"""One exception root; each subclass says what went wrong and how to fix it."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "CorrelationPendingError",
    "DatabaseUnavailableError",
    "FlowDefinitionError",
    "FlowMismatchError",
    "LeaseLostError",
    "NonRetryableError",
    "ReferenceResolutionError",
    "ResoluteError",
    "RunNotFoundError",
    "StepTimeoutError",
    "UnknownFlowError",
]


class ResoluteError(Exception):
    """Root of every error Resolute raises on purpose."""


class FlowDefinitionError(ResoluteError):
    """A flow is malformed; raised by ``Flow.build()`` naming the flow and step."""

    def __init__(self, flow: str, step: str | None, problem: str) -> None:
        where = f"flow {flow!r}" + (f", step {step!r}" if step else "")
        super().__init__(f"{where}: {problem}")
        self.flow = flow
        self.step = step
        self.problem = problem


class ReferenceResolutionError(ResoluteError):
    """A data reference (``Output(...)``, template, callable) could not be resolved."""


class NonRetryableError(ResoluteError):
    """Raise from a node to fail the step at once, without further attempts."""


class CorrelationPendingError(ResoluteError):
    """An earlier run of the same incident has not recorded the output a step needs yet;
    retried with backoff."""


class StepTimeoutError(ResoluteError):
    """A step attempt ran longer than its node's timeout."""


class FlowMismatchError(ResoluteError):
    """A run's recorded log no longer matches its flow definition (the flow changed)."""

    def __init__(self, run_id: str, step: str, problem: str) -> None:
        super().__init__(
            f"run {run_id}: step {step!r}: {problem}. The flow changed since this run "
            "started; deploy the old flow under a new name or cancel the run "
            "(`resolute cancel RUN`)."
        )
        self.run_id = run_id
        self.step = step


class UnknownFlowError(ResoluteError):
    """No registered flow carries this name."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f" Known flows: {', '.join(sorted(known))}." if known else ""
        super().__init__(f"unknown flow {name!r}.{hint}")
        self.name = name


class RunNotFoundError(ResoluteError):
    """No run with this id exists in the database."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} not found; list runs with `resolute runs list`")
        self.run_id = run_id


class LeaseLostError(ResoluteError):
    """This worker no longer holds the run's lease; another writer took it over."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id}: lease lost (another worker took the run over, or it was "
            "cancelled); this worker stops driving it"
        )
        self.run_id = run_id


class DatabaseUnavailableError(ResoluteError):
    """PostgreSQL cannot be reached."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(
            f"cannot reach PostgreSQL at {url}: {cause}. Check RESOLUTE_DATABASE_URL "
            "(postgresql://user:pass@host:port/db) or unset it to use the embedded database."
        )
        self.url = url


class ConfigurationError(ResoluteError):
    """A setting is missing or invalid."""

"""Nodes: the units of work a flow runs, with their retry policy and timeout.

``@node("name")`` turns ``async def fn(input: T) -> O`` (or ``fn(ctx, input)``, or a
sync function, which runs in a thread) into a :class:`Node`. Input and output types
come from the annotations: the input is validated before the call, the output after it,
and outputs are rehydrated to ``O`` when a run is replayed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload, runtime_checkable

from pydantic import TypeAdapter

from .errors import ConfigurationError, CorrelationPendingError, NonRetryableError
from .logs import logger_for

if TYPE_CHECKING:
    from .state import FlowState

__all__ = [
    "UNBOUND",
    "Node",
    "Provider",
    "RetryPolicy",
    "Runtime",
    "StepContext",
    "correlated_output",
    "node",
]

P = TypeVar("P")


class _Unbound:
    def __repr__(self) -> str:
        return "UNBOUND"


UNBOUND: Any = _Unbound()


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"durations must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; attempts count the first try."""

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_interval < 0 or self.max_interval < 0 or self.backoff_coefficient < 1:
            raise ValueError("RetryPolicy intervals must be >= 0 and the coefficient >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = min(
            self.initial_interval * self.backoff_coefficient ** (attempt - 1), self.max_interval
        )
        return base * (1 + random.uniform(-self.jitter, self.jitter)) if self.jitter else base

    def retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, (NonRetryableError, *self.non_retryable))


@runtime_checkable
class Provider(Protocol):
    """An integration registered on a worker (``Worker.with_providers``)."""

    name: str

    async def close(self) -> None: ...


class Runtime(Protocol):
    """What a running step may ask of the engine beyond its input."""

    async def send_signal(
        self,
        name: str,
        payload: Any,
        *,
        run_id: str | None,
        correlation_key: str | None,
        idempotency_key: str,
        sent_by: str,
    ) -> int: ...

    async def recorded_output(
        self, correlation_key: str, alias: str, flow: str | None, exclude_run: str
    ) -> tuple[bool, Any]: ...


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a running step knows about itself."""

    run_id: str
    flow: str
    step: str
    node_path: str
    attempt: int
    state: FlowState
    providers: tuple[Provider, ...] = ()
    runtime: Runtime | None = None

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """Logs whose every line names the run, flow, step and attempt (made on use:
        most steps never log)."""
        return logger_for(
            "resolute.step",
            run_id=self.run_id,
            flow=self.flow,
            step=self.step,
            attempt=self.attempt,
        )

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and crashes: the same step of the same run."""
        return f"{self.run_id}:{self.node_path}"

    async def emit_signal(
        self,
        name: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        correlation_key: str | None = None,
    ) -> int:
        """Send a signal from this step; a re-run of the step does not send it twice."""
        target = run_id or correlation_key or "*"
        return await self._runtime().send_signal(
            name,
            payload,
            run_id=run_id,
            correlation_key=correlation_key,
            idempotency_key=f"{self.idempotency_key}:{name}:{target}",
            sent_by=f"run:{self.run_id}",
        )

    async def correlated(self, alias: str, *, flow: str | None = None) -> Any:
        """The output ``alias`` recorded by an earlier run of the same incident (same
        correlation key), e.g. the ticket the triggered run created. Retryable when no
        such run has recorded it yet (events may arrive out of order)."""
        key = self.state.correlation_key
        if key is None:
            raise NonRetryableError(
                f"step {self.step!r} reads {alias!r} from a correlated run, but run "
                f"{self.run_id} has no correlation key"
            )
        found, value = await self._runtime().recorded_output(key, alias, flow, self.run_id)
        if not found:
            raise CorrelationPendingError(
                f"no earlier run of {key} has recorded {alias!r} yet"
                + (f" (flow {flow!r})" if flow else "")
            )
        return value

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise ConfigurationError("this needs a step run by a worker")
        return self.runtime

    def provider(self, kind: type[P]) -> P:
        for p in self.providers:
            if isinstance(p, kind):
                return p
        raise ConfigurationError(
            f"step {self.step!r} needs a {kind.__name__}; register one with "
            f"Worker(...).with_providers({kind.__name__}(...))"
        )


@dataclass(frozen=True)
class Node:
    """A unit of work. Immutable: ``as_`` and ``with_input`` return copies."""

    name: str
    fn: Callable[..., Any]
    input_type: Any = None
    output_type: Any = None
    takes_ctx: bool = False
    takes_input: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    alias: str = ""
    binding: Any = UNBOUND

    def __post_init__(self) -> None:
        if not self.alias:
            object.__setattr__(self, "alias", self.name)

    def as_(self, alias: str) -> Node:
        return replace(self, alias=alias)

    def with_input(self, value: Any = UNBOUND, /, **fields: Any) -> Node:
        """Bind the input explicitly: one value, or keyword fields of the input model."""
        if (value is UNBOUND) == (not fields):
            raise TypeError(f"node {self.name!r}: with_input takes one value or keyword fields")
        if not self.takes_input:
            raise TypeError(f"node {self.name!r} takes no input")
        return replace(self, binding=fields if value is UNBOUND else value)

    @cached_property
    def input_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.input_type if self.input_type is not None else Any)

    @cached_property
    def output_adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.output_type if self.output_type is not None else Any)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    async def invoke(self, ctx: StepContext, value: Any) -> Any:
        args: list[Any] = [ctx] if self.takes_ctx else []
        if self.takes_input:
            args.append(value)
        if self.is_async:
            return await typing.cast(Awaitable[Any], self.fn(*args))
        return await asyncio.to_thread(self.fn, *args)


def _signature(fn: Callable[..., Any], name: str) -> tuple[bool, bool, Any, Any]:
    """(takes_ctx, takes_input, input_type, output_type) from annotations."""
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())
    takes_ctx = bool(params) and (
        hints.get(params[0].name) is StepContext or params[0].name in ("ctx", "context")
    )
    rest = params[1:] if takes_ctx else params
    if len(rest) > 1:
        raise TypeError(
            f"node {name!r}: a node takes at most (ctx, input); got {[p.name for p in params]}"
        )
    input_type = hints.get(rest[0].name, Any) if rest else None
    output_type = hints.get("return", Any)
    return takes_ctx, bool(rest), input_type, (None if output_type is type(None) else output_type)


@overload
def node(name: Callable[..., Any], /) -> Node: ...


@overload
def node(
    name: str | None = None,
    /,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | timedelta | None = None,
) -> Callable[[Callable[..., Any]], Node]: ...


def node(
    name: str | Callable[..., Any] | None = None,
    /,
    *,
    retry: RetryPolicy | None = None,
    timeout: float | timedelta | None = None,
) -> Node | Callable[[Callable[..., Any]], Node]:
    """Declare a node: ``@node``, ``@node("parse-webhook", retry=..., timeout=30)``."""

    def wrap(fn: Callable[..., Any]) -> Node:
        node_name = name if isinstance(name, str) else fn.__name__.replace("_", "-")
        takes_ctx, takes_input, input_type, output_type = _signature(fn, node_name)
        return Node(
            name=node_name,
            fn=fn,
            input_type=input_type,
            output_type=output_type,
            takes_ctx=takes_ctx,
            takes_input=takes_input,
            retry=retry or RetryPolicy(),
            timeout=_seconds(timeout),
        )

    if callable(name):
        return wrap(name)
    return wrap


def correlated_output(
    alias: str,
    *,
    flow: str | None = None,
    model: Any = None,
    retry: RetryPolicy | None = None,
) -> Node:
    """A step whose output is ``alias`` as recorded by an earlier run of the same
    incident: ``correlated_output("ticket", flow="incident-response").as_("ticket")``.

    Recorded in this run's log like any output, so replay never asks again. Retried
    with backoff while no earlier run has recorded it (an out-of-order webhook).
    """

    async def lookup(ctx: StepContext) -> Any:
        return await ctx.correlated(alias, flow=flow)

    return Node(
        name=f"correlated:{alias}",
        fn=lookup,
        output_type=model,
        takes_ctx=True,
        takes_input=False,
        retry=retry or RetryPolicy(max_attempts=8, initial_interval=1.0, max_interval=30.0),
        alias=alias,
    )

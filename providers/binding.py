"""How provider node factories turn keyword arguments into a node's explicit input.

Every keyword of a factory accepts a literal, ``Output("alias.path")``, a ``Template``
or a callable of ``FlowState``; the engine resolves the binding when the step starts and
validates it into the node's input model. Arguments left as ``None`` are not bound, so
the model's defaults apply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel

from orchestrator.node import Node, RetryPolicy, StepContext
from orchestrator.refs import Output, Template
from orchestrator.state import FlowState

__all__ = ["Bind", "provider_node"]

T = TypeVar("T")
In = TypeVar("In", bound=BaseModel)

Bind: TypeAlias = T | Output | Template | Callable[[FlowState], T]
"""A value for one input field: the value itself or something that resolves to it."""


def provider_node(
    name: str,
    fn: Callable[[StepContext, In], Awaitable[Any]],
    input_type: type[In],
    output_type: Any,
    binding: Mapping[str, Any],
    *,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """A node calling ``fn(ctx, input)`` with ``binding`` (``None`` values dropped)."""
    return Node(
        name=name,
        fn=fn,
        input_type=input_type,
        output_type=output_type,
        takes_ctx=True,
        takes_input=True,
        retry=retry or RetryPolicy(),
        timeout=timeout,
        binding={k: v for k, v in binding.items() if v is not None},
    )

"""Resolute: durable, audited incident-response flows on PostgreSQL."""

from .client import Client, RunTimeoutError
from .definition import Flow, FlowDefinition, timer, wait_for_signal
from .errors import (
    ConfigurationError,
    CorrelationPendingError,
    DatabaseUnavailableError,
    FlowDefinitionError,
    FlowMismatchError,
    LeaseLostError,
    NonRetryableError,
    ReferenceResolutionError,
    ResoluteError,
    RunNotFoundError,
    StepTimeoutError,
    UnknownFlowError,
)
from .node import Node, Provider, RetryPolicy, StepContext, correlated_output, node
from .refs import Output, Template
from .settings import Settings
from .state import FlowState
from .store import RunInfo
from .triggers import manual, schedule, signal, webhook
from .verify import HmacSignature, Verifier, no_verification, pagerduty_v3
from .worker import Worker, WorkerConfig

__all__ = [
    "Client",
    "ConfigurationError",
    "CorrelationPendingError",
    "DatabaseUnavailableError",
    "Flow",
    "FlowDefinition",
    "FlowDefinitionError",
    "FlowMismatchError",
    "FlowState",
    "HmacSignature",
    "LeaseLostError",
    "Node",
    "NonRetryableError",
    "Output",
    "Provider",
    "ReferenceResolutionError",
    "ResoluteError",
    "RetryPolicy",
    "RunInfo",
    "RunNotFoundError",
    "RunTimeoutError",
    "Settings",
    "StepContext",
    "StepTimeoutError",
    "Template",
    "UnknownFlowError",
    "Verifier",
    "Worker",
    "WorkerConfig",
    "correlated_output",
    "manual",
    "no_verification",
    "node",
    "pagerduty_v3",
    "schedule",
    "signal",
    "timer",
    "wait_for_signal",
    "webhook",
]

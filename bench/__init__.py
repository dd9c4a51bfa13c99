"""Benchmarks: Resolute against DBOS Transact and Absurd on the incident-shape workload."""

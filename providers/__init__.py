"""Integrations as nodes: PagerDuty, Jira, Slack, Confluence, local transforms and runbook
checks, on one HTTP layer (``providers.http``), with fake vendor APIs in
``providers.sandbox``. See docs/providers.md.
"""

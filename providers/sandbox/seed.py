"""The sandbox's world: its credentials and the people every fake vendor knows.

Credentials are fixed so a demo in another process can use them; they open nothing
but the fakes on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CREDENTIALS", "PEOPLE", "Person"]


@dataclass(frozen=True)
class Person:
    key: str
    name: str
    email: str
    pagerduty_id: str
    jira_account_id: str
    slack_id: str
    time_zone: str


PEOPLE = (
    Person(
        key="alice",
        name="Alice Moreau",
        email="alice@example.com",
        pagerduty_id="PALICE1",
        jira_account_id="5b10a2844c20165700ede21a",
        slack_id="U0ALICE01",
        time_zone="Europe/Paris",
    ),
    Person(
        key="bob",
        name="Bob Okafor",
        email="bob@example.com",
        pagerduty_id="PBOB002",
        jira_account_id="5b10ac8d82e05b22cc7d4ef5",
        slack_id="U0BOB0002",
        time_zone="America/New_York",
    ),
)

CREDENTIALS = {
    "pagerduty_api_key": "sandbox-pagerduty-api-key",
    "pagerduty_routing_key": "sandboxroutingkey000000000000001",
    "pagerduty_from_email": PEOPLE[0].email,
    "pagerduty_webhook_secret": "sandbox-webhook-signing-secret",
    "jira_email": "resolute-bot@example.com",
    "jira_api_token": "sandbox-jira-api-token",
    "slack_bot_token": "xoxb-sandbox-0000-bot-token",
    "slack_incident_channel": "#incidents",
    "confluence_email": "resolute-bot@example.com",
    "confluence_api_token": "sandbox-confluence-api-token",
}

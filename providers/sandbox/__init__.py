"""Local fakes of PagerDuty, Jira, Slack and Confluence, so flows run offline.

``await start_sandbox()`` serves each fake on its own loopback port; ``Sandbox.env()``
gives the environment variables that point the providers at them. ``main()`` (the
``resolute sandbox`` command) runs them until Ctrl-C and prints those variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .confluence import ConfluenceFake
from .fake import Exchange, Fake, Fault
from .jira import JiraFake
from .pagerduty import PagerDutyFake
from .seed import CREDENTIALS, PEOPLE, Person
from .slack import SlackFake

__all__ = [
    "CREDENTIALS",
    "PEOPLE",
    "VENDORS",
    "Exchange",
    "Fault",
    "Person",
    "Sandbox",
    "main",
    "start_sandbox",
]

VENDORS = ("pagerduty", "jira", "slack", "confluence")
DEFAULT_PORT = 8710  # pagerduty; the others follow in VENDORS order


@dataclass
class Sandbox:
    """The running fakes: their URLs, state, recorded traffic and fault injection."""

    fakes: dict[str, Fake]
    urls: dict[str, str]
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        """Environment variables pointing every provider's ``from_env()`` at the fakes."""
        c = CREDENTIALS
        return {
            "PAGERDUTY_BASE_URL": self.urls["pagerduty"],
            "PAGERDUTY_EVENTS_URL": self.urls["pagerduty"] + "/v2/enqueue",
            "PAGERDUTY_API_KEY": c["pagerduty_api_key"],
            "PAGERDUTY_ROUTING_KEY": c["pagerduty_routing_key"],
            "PAGERDUTY_FROM_EMAIL": c["pagerduty_from_email"],
            "PAGERDUTY_WEBHOOK_SECRETS": c["pagerduty_webhook_secret"],
            "JIRA_BASE_URL": self.urls["jira"],
            "JIRA_EMAIL": c["jira_email"],
            "JIRA_API_TOKEN": c["jira_api_token"],
            "SLACK_BASE_URL": self.urls["slack"] + "/api/",
            "SLACK_BOT_TOKEN": c["slack_bot_token"],
            "SLACK_INCIDENT_CHANNEL": c["slack_incident_channel"],
            "CONFLUENCE_BASE_URL": self.urls["confluence"] + "/wiki",
            "CONFLUENCE_EMAIL": c["confluence_email"],
            "CONFLUENCE_API_TOKEN": c["confluence_api_token"],
        }

    def state(self) -> dict[str, Any]:
        """A copy of what every fake holds (what ``GET /_sandbox/state`` answers)."""
        return {name: fake.snapshot() for name, fake in self.fakes.items()}

    @property
    def traffic(self) -> list[Exchange]:
        return [x for fake in self.fakes.values() for x in fake.traffic]

    def inject(self, vendor: str, path: str, status: int | None = None, **options: Any) -> None:
        """Make the next matching request(s) fail; see ``Fault`` for the options."""
        self.fakes[vendor].inject(Fault(path=path, status=status, **options))

    def clear_faults(self) -> None:
        for fake in self.fakes.values():
            fake.faults.clear()

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()


async def start_sandbox(host: str = "127.0.0.1", ports: Mapping[str, int] | None = None) -> Sandbox:
    """Serve the fakes on ``host``; ``ports`` per vendor, any free port when unset/0."""
    fakes: dict[str, Fake] = {
        "pagerduty": PagerDutyFake(),
        "jira": JiraFake(),
        "slack": SlackFake(),
        "confluence": ConfluenceFake(),
    }
    sandbox = Sandbox(fakes=fakes, urls={})
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 literal needs brackets
    try:
        for name, fake in fakes.items():
            runner = web.AppRunner(fake.app(), access_log=None)
            await runner.setup()
            sandbox._runners.append(runner)
            await web.TCPSite(runner, host, (ports or {}).get(name, 0)).start()
            sandbox.urls[name] = f"http://{netloc}:{runner.addresses[0][1]}"
    except BaseException:
        await sandbox.close()
        raise
    return sandbox


def main(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Run the sandbox until Ctrl-C; vendors on ``port``, ``port + 1``, ... (0: any)."""
    ports = {name: port + i if port else 0 for i, name in enumerate(VENDORS)}

    async def serve() -> None:
        sandbox = await start_sandbox(host, ports)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        print("# Resolute sandbox: fake vendor APIs. Point the providers at them with:")
        for key, value in sandbox.env().items():
            print(f"export {key}={shlex.quote(value)}")
        for name, url in sandbox.urls.items():
            print(f"# {name}: {url}  (state: {url}/_sandbox/state)")
        print("# Ctrl-C to stop.", flush=True)
        try:
            await stop.wait()
        finally:
            await sandbox.close()

    asyncio.run(serve())

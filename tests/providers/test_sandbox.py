"""The sandbox itself: control endpoints, seeded data, env, and ``main`` as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from providers.sandbox import CREDENTIALS, Sandbox

REPO = Path(__file__).resolve().parents[2]


async def test_faults_and_state_over_http(sandbox: Sandbox) -> None:
    base = sandbox.urls["pagerduty"]
    auth = {"Authorization": f"Token token={CREDENTIALS['pagerduty_api_key']}"}
    async with aiohttp.ClientSession() as http:
        fault = {"path": "/oncalls", "status": 429, "times": 1, "retry_after": 7}
        async with http.post(f"{base}/_sandbox/faults", json=fault) as resp:
            assert resp.status == 201
        async with http.get(f"{base}/oncalls", headers=auth) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "7"
            assert resp.headers["ratelimit-remaining"] == "0"
            body = await resp.json()
            assert body["error"]["code"] == 2020
        async with http.get(f"{base}/oncalls", headers=auth) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/_sandbox/faults", json={"path": "/x", "status": 99}) as resp:
            assert resp.status == 400
        await http.post(f"{base}/_sandbox/faults", json={"path": "/incidents*", "status": 500})
        async with http.delete(f"{base}/_sandbox/faults") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/incidents/anything", headers=auth) as resp:
            assert resp.status == 404
        async with http.get(f"{base}/_sandbox/state") as resp:
            state = await resp.json()
    assert {"users", "incidents", "notes", "events", "oncalls"} <= set(state)


async def test_unknown_routes_answer_in_the_vendor_envelope(sandbox: Sandbox) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(sandbox.urls["jira"] + "/rest/api/3/nope") as resp,
    ):
        assert resp.status == 401  # authentication comes first, as on the real site
        assert "errorMessages" in await resp.json()


def test_seeded_world(sandbox: Sandbox) -> None:
    state = sandbox.state()
    assert state["jira"]["projects"]["OPS"]["name"] == "Operations"
    assert {s["key"] for s in state["confluence"]["spaces"].values()} == {"OPS"}
    emails = {u["email"] for u in state["pagerduty"]["users"].values()}
    assert emails == {u["profile"]["email"] for u in state["slack"]["users"].values()}
    env = sandbox.env()
    assert env["PAGERDUTY_EVENTS_URL"].endswith("/v2/enqueue")
    assert env["SLACK_BASE_URL"].endswith("/api/")
    assert all(v.startswith("http://127.0.0.1:") for k, v in env.items() if k.endswith("_URL"))


def test_main_prints_the_environment_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "providers.sandbox", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        exports = dict(
            line.removeprefix("export ").strip().split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        assert exports["JIRA_BASE_URL"].startswith("http://127.0.0.1:")
        assert exports["SLACK_BOT_TOKEN"] == CREDENTIALS["slack_bot_token"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

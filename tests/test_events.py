"""The event log (management/events.py) on a real cluster: token changes and members are recorded
from the coordinator, readable with a viewer's credential, filtered, and pushed live as Server-Sent
Events that a client resumes with Last-Event-ID; a recorder's credential cannot read them."""

from __future__ import annotations

import threading

import httpx
import pytest
from cluster_harness import RECORDER_TOKENS, VIEWER_TOKEN, running_cluster, wait_holder
from conftest import wait_for


@pytest.fixture
def cluster(tmp_path, camera):
    with running_cluster(tmp_path, camera) as parts:
        yield parts


class EventStream(threading.Thread):
    """A Server-Sent Events client: every (id, event, data) received, in order."""

    def __init__(self, url: str, last_id: str = "") -> None:
        super().__init__(daemon=True)
        headers = {"Authorization": f"Bearer {VIEWER_TOKEN}", **({"Last-Event-ID": last_id} if last_id else {})}
        self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(5, read=None))
        self.url = url
        self.received: list[tuple[str, str, str]] = []
        self.response: httpx.Response | None = None

    def run(self) -> None:
        fields: dict[str, str] = {}
        try:
            with self.http.stream("GET", self.url) as response:
                self.response = response
                for line in response.iter_lines():
                    if not line:
                        if "data" in fields:
                            self.received.append((fields.get("id", ""), fields.get("event", ""), fields["data"]))
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            return  # closed by the test

    def messages(self) -> list[str]:
        return [data for _id, _event, data in self.received]

    def close(self) -> None:
        self.http.close()
        self.join(timeout=10)


def test_token_changes_are_recorded_and_pushed_live(cluster):
    management, a, _b = cluster
    viewer = httpx.Client(base_url=management.url, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=10)

    def said(**query: str) -> list[str]:
        return [e["message"] for e in viewer.get("/api/v1/events", params=query).json()["events"]]

    wait_for(lambda: any("rec-a holds the token (fence" in m for m in said(kind="token")), 30, "the token event")
    assert any("rec-b joined cluster main" in m for m in said(kind="member", recorder="rec-b")), said()
    assert all(m.startswith("cluster main") for m in said(kind="token", cluster="main"))
    stream = EventStream(f"{management.url}/api/v1/events/stream?kind=token")
    stream.start()
    try:
        wait_for(lambda: stream.received, 30, "the backlog on the stream")
        a.proc.kill()
        wait_holder(management, "rec-b", timeout=30)
        wait_for(lambda: any("rec-b holds the token" in m for m in stream.messages()), 30, "the new holder, live")
        assert all(event == "token" for _id, event, _data in stream.received), stream.received
        ids = [int(i) for i, _event, _data in stream.received]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    finally:
        stream.close()
    first_id = stream.received[0][0]
    resumed = EventStream(f"{management.url}/api/v1/events/stream?kind=token", last_id=first_id)
    resumed.start()
    try:
        wait_for(lambda: len(resumed.received) >= len(stream.received) - 1, 30, "the events after Last-Event-ID")
        assert [i for i, _e, _d in resumed.received] == [i for i, _e, _d in stream.received[1:]][
            : len(resumed.received)
        ]
    finally:
        resumed.close()
    page = viewer.get("/api/v1/events", params={"limit": 1}).json()["events"]
    assert len(page) == 1 and page[0]["id"] == 1
    refused = httpx.get(
        f"{management.url}/api/v1/events", headers={"Authorization": f"Bearer {RECORDER_TOKENS['rec-a']}"}
    )
    assert refused.status_code == 403, refused.text
    bad = viewer.get("/api/v1/events", params={"kind": "nonsense"})
    assert bad.status_code == 400 and "kind" in bad.json()["error"], bad.text
    viewer.close()

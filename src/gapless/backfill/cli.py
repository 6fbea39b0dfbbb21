"""`gapless backfill`: queue a job on the target recorder and show its progress until it ends."""

from __future__ import annotations

import time

import click
import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

POLL_S = 0.5
#: Give up following (the job itself goes on inside the recorder) after this long without progress.
STALL_S = 600.0


def run_backfill(
    target: str,
    source: str,
    camera: str,
    source_camera: str | None,
    start: str | None,
    end: str | None,
    token: str,
    source_token: str | None,
    no_wait: bool,
) -> int:
    now = time.time()
    body = {"camera": camera, "source": source, "start": start or f"{now - 3600:.3f}", "end": end or f"{now:.3f}"}
    if source_camera:
        body["source_camera"] = source_camera
    if source.startswith(("http://", "https://")):
        body["source_token"] = source_token or token
    with httpx.Client(base_url=target.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        try:
            created = api.post("/api/v1/backfill", json=body)
        except httpx.HTTPError as exc:
            click.echo(f"error: cannot reach {target}: {exc}", err=True)
            return 2
        if created.status_code != 201:
            click.echo(f"error: {created.text.strip()}", err=True)
            return 2
        job = created.json()
        click.echo(f"backfill job {job['id']}: {camera} from {job['source']}, {job['start']} → {job['end']}")
        if no_wait:
            return 0
        job = _follow(api, job)
    for message in job["errors"]:
        click.echo(f"  {message}", err=True)
    click.echo(
        f"job {job['id']} {job['state']}: {job['fragments_done']}/{job['fragments_total']} fragments,"
        f" {job['stored_frames']} frames stored, {job['refused']} refused"
    )
    return 0 if job["state"] == "done" else 1


def _follow(api: httpx.Client, job: dict) -> dict:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    last_change = time.monotonic()
    seen = None
    with Progress(*columns) as progress:
        bar = progress.add_task(f"job {job['id']}", total=None)
        while job["state"] in ("waiting", "running"):
            time.sleep(POLL_S)
            try:
                job = api.get(f"/api/v1/backfill/{job['id']}").json()
            except httpx.HTTPError as exc:
                progress.console.print(f"[yellow]target unreachable ({exc}); still trying")
            state = (job["state"], job["bytes_done"], job["attempts"])
            if state != seen:
                seen, last_change = state, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                progress.console.print("[red]no progress for 10 min; the job stays queued on the recorder")
                break
            note = f" (waiting: {job['errors'][-1]})" if job["state"] == "waiting" and job["errors"] else ""
            progress.update(
                bar,
                total=job["bytes_total"] or None,
                completed=job["bytes_done"],
                description=f"job {job['id']} {job['state']}{note}"[:100],
            )
    return job

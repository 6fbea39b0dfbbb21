"""`gapless backfill`: queue a job on the target recorder and show its progress until it ends."""

from __future__ import annotations

import time

import click
import httpx
from pydantic import ValidationError
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from gapless.contracts.recorder import BackfillRequest, JobInfo

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
    try:
        request = BackfillRequest.model_validate(
            {
                "camera": camera,
                "source": source,
                "start": start or f"{now - 3600:.3f}",
                "end": end or f"{now:.3f}",
                "source_camera": source_camera or None,
                "source_token": (source_token or token) if source.startswith(("http://", "https://")) else None,
            }
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False))
        click.echo(f"error: {problems}", err=True)
        return 2
    body = request.model_dump(mode="json", exclude_none=True)
    with httpx.Client(base_url=target.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        try:
            created = api.post("/api/v1/backfill", json=body)
        except httpx.HTTPError as exc:
            click.echo(f"error: cannot reach {target}: {exc}", err=True)
            return 2
        if created.status_code != 201:
            click.echo(f"error: {created.text.strip()}", err=True)
            return 2
        job = JobInfo.model_validate_json(created.content)
        click.echo(f"backfill job {job.id}: {camera} from {job.source}, {job.start} → {job.end}")
        if no_wait:
            return 0
        job = _follow(api, job)
    for message in job.errors:
        click.echo(f"  {message}", err=True)
    click.echo(
        f"job {job.id} {job.state}: {job.fragments_done}/{job.fragments_total} fragments,"
        f" {job.stored_frames} frames stored, {job.refused} refused"
    )
    return 0 if job.state == "done" else 1


def _follow(api: httpx.Client, job: JobInfo) -> JobInfo:
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
        bar = progress.add_task(f"job {job.id}", total=None)
        while job.state in ("waiting", "running"):
            time.sleep(POLL_S)
            try:
                job = JobInfo.model_validate_json(api.get(f"/api/v1/backfill/{job.id}").raise_for_status().content)
            except (httpx.HTTPError, ValidationError) as exc:
                progress.console.print(f"[yellow]target unreachable or answering badly ({exc}); still trying")
            state = (job.state, job.bytes_done, job.attempts)
            if state != seen:
                seen, last_change = state, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                progress.console.print("[red]no progress for 10 min; the job stays queued on the recorder")
                break
            note = f" (waiting: {job.errors[-1]})" if job.state == "waiting" and job.errors else ""
            progress.update(
                bar,
                total=job.bytes_total or None,
                completed=job.bytes_done,
                description=f"job {job.id} {job.state}{note}"[:100],
            )
    return job

"""The HTTP stack, measured: Gapless's aiohttp servers against an ASGI stack (Starlette on uvicorn
with httptools), serving what a recorder serves, side by side in one run.

Three loads, each the same bytes from both servers, driven by one client:
- segments: 256 KiB HLS segments read from disk (one GOP at 2 Mbit/s), 8 at a time;
- export: a 64 MiB export streamed in 1 MiB writes, 2 at a time;
- listing: a fragment listing (200 rows, pydantic JSON), 8 at a time.

The figure that matters is the server's CPU per request or per MiB (from /proc): a recorder's
CPU belongs to ingest, and the HTTP stack must take as little of it as possible. Run:
`python bench/http_stack.py` (needs the `bench` extra: `pip install -e '.[bench]'`; ~1 min), which prints a
table and rewrites its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from report import free_port, write_section

SEGMENT = 256 * 1024
EXPORT = 64 * 1024 * 1024
CHUNK = 1024 * 1024
LISTING_ROWS = 200
TICKS = os.sysconf("SC_CLK_TCK")
LOADS = {  # name: (path, requests, concurrency)
    "segments": ("/segment", 3000, 8),
    "export": ("/export", 24, 2),
    "listing": ("/fragments", 3000, 8),
}


def listing_json() -> bytes:
    from gapless.contracts.recorder import FragmentInfo, FragmentList

    rows = [
        FragmentInfo(
            id=i, camera="cam0", run="r", seq=i, start_us=i * 10**6, end_us=(i + 1) * 10**6, frames=25,
            bytes=250_000, sha256="0" * 64, init="1" * 16, origin="rec-a", arrival_us=i * 10**6,
        )
        for i in range(LISTING_ROWS)
    ]  # fmt: skip
    return FragmentList(camera="cam0", fragments=rows).model_dump_json().encode()


def read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


def serve_aiohttp(port: int, data: Path) -> None:
    from aiohttp import web

    from gapless.common.http import application, serving

    async def segment(_request: web.Request) -> web.Response:
        return web.Response(body=await asyncio.to_thread(read, data, 0, SEGMENT), content_type="video/iso.segment")

    async def export(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        await response.prepare(request)
        for offset in range(0, EXPORT, CHUNK):
            await response.write(await asyncio.to_thread(read, data, offset, CHUNK))
        await response.write_eof()
        return response

    async def fragments(_request: web.Request) -> web.Response:
        return web.json_response(text=listing_json().decode())

    async def main() -> None:
        app = application()
        app.router.add_get("/segment", segment)
        app.router.add_get("/export", export)
        app.router.add_get("/fragments", fragments)
        async with serving(app, "127.0.0.1", port) as stop:
            await stop.wait()

    asyncio.run(main())


def serve_starlette(port: int, data: Path) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def segment(_request: Request) -> Response:
        return Response(await asyncio.to_thread(read, data, 0, SEGMENT), media_type="video/iso.segment")

    async def export(_request: Request) -> StreamingResponse:
        async def chunks():
            for offset in range(0, EXPORT, CHUNK):
                yield await asyncio.to_thread(read, data, offset, CHUNK)

        return StreamingResponse(chunks(), media_type="video/mp4")

    async def fragments(_request: Request) -> Response:
        return Response(listing_json(), media_type="application/json")

    app = Starlette(routes=[Route("/segment", segment), Route("/export", export), Route("/fragments", fragments)])
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", access_log=False, log_level="warning")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def drive(port: int, path: str, requests: int, concurrency: int) -> int:
    """Send the requests; the bytes received (every answer must be 200)."""
    received = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:

        async def worker() -> None:
            nonlocal received
            while not queue.empty():
                queue.get_nowait()
                async with session.get(path) as reply:
                    assert reply.status == 200, reply.status
                    async for chunk in reply.content.iter_chunked(CHUNK):
                        received += len(chunk)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return received


def wait_listening(port: int, deadline_s: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def measure(stack: str, data: Path) -> dict[str, tuple[float, float, float]]:
    """load -> (server CPU s, wall s, MiB received)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", stack, "--port", str(port), "--data", str(data)])
    try:
        wait_listening(port)
        asyncio.run(drive(port, "/segment", 50, 4))  # warm up
        results = {}
        for load, (path, requests, concurrency) in LOADS.items():
            cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
            received = asyncio.run(drive(port, path, requests, concurrency))
            results[load] = (cpu_seconds(server.pid) - cpu0, time.monotonic() - wall0, received / 2**20)
        return results
    finally:
        server.terminate()
        server.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["aiohttp", "starlette"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per stack (best kept)")
    args = parser.parse_args()
    if args.serve:
        {"aiohttp": serve_aiohttp, "starlette": serve_starlette}[args.serve](args.port, args.data)
        return
    with tempfile.TemporaryDirectory(prefix="gapless-bench-http-") as tmp:
        data = Path(tmp) / "data"
        data.write_bytes(os.urandom(EXPORT))
        best: dict[str, dict[str, tuple[float, float, float]]] = {}
        for _ in range(args.rounds):  # alternate, so both see the same machine state
            for stack in ("aiohttp", "starlette"):
                for load, figures in measure(stack, data).items():
                    kept = best.setdefault(stack, {}).get(load)
                    if kept is None or figures[0] < kept[0]:
                        best[stack][load] = figures
    header = "| load | stack | requests | server CPU s | CPU ms per request | CPU ms per MiB | requests/s | MiB/s |"
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for load, (_path, requests, _concurrency) in LOADS.items():
        for stack in ("aiohttp", "starlette"):
            cpu, wall, mib = best[stack][load]
            lines.append(
                f"| {load} | {stack} | {requests} | {cpu:.2f} | {1000 * cpu / requests:.2f} | {1000 * cpu / mib:.2f}"
                f" | {requests / wall:.0f} | {mib / wall:.0f} |"
            )
    print("\n".join(lines))
    ratios = {load: best["starlette"][load][0] / best["aiohttp"][load][0] for load in LOADS}
    write_section(
        "http",
        [
            "## HTTP stack (`bench/http_stack.py`)",
            "",
            "Gapless's aiohttp servers (`common/http.py`: JSON errors middleware, one runner) against Starlette on"
            " uvicorn with httptools, serving the same bytes to one client in one run; best of"
            f" {args.rounds} alternating rounds, loopback, 2 cores. Server CPU from /proc.",
            "",
            *lines,
            "",
            "Starlette's server CPU relative to aiohttp's: "
            + ", ".join(f"{load} {ratio:.2f}" for load, ratio in ratios.items())
            + ". Decision: keep aiohttp with a typed route layer (`common/openapi.documented`: pydantic queries"
            " and bodies, OpenAPI from the same declarations) unless an ASGI stack costs clearly less server"
            " CPU for what a recorder serves; moving would rewrite every server and stream for no measured gain.",
        ],
    )


if __name__ == "__main__":
    main()

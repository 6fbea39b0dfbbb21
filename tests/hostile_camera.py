"""A camera that does what broken or hostile cameras do, one misbehaviour per path (RTSP on loopback):

- /huge-reply: answers DESCRIBE with `Content-Length: 2000000000`
- /slow: answers one byte every 4 s
- /garbage-sdp: answers DESCRIBE with a body that is no session description
- /endless-fu: streams one FU-A fragmented NAL unit that never ends
- /no-marker: streams 64 kB packets, never a marker bit, never a keyframe

`python tests/hostile_camera.py PORT` prints "ready" once listening; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import sys

SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=hostile\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n"
)


def reply(cseq: str, extra: str = "", body: bytes = b"") -> bytes:
    head = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def rtp(seq: int, ts: int, payload: bytes, marker: bool = False) -> bytes:
    packet = struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | 96, seq & 0xFFFF, ts & 0xFFFFFFFF, 7) + payload
    return struct.pack(">cBH", b"$", 0, len(packet)) + packet


async def stream(path: str, writer: asyncio.StreamWriter) -> None:
    seq = 0
    if path == "endless-fu":
        writer.write(rtp(seq, 0, bytes([0x7C, 0x85]) + bytes(1400)))
        while True:
            for _ in range(100):
                seq += 1
                writer.write(rtp(seq, 0, bytes([0x7C, 0x05]) + bytes(1400)))
            await writer.drain()
            await asyncio.sleep(0.05)
    else:  # no-marker: non-IDR slices, a new timestamp every packet
        while True:
            seq += 1
            writer.write(rtp(seq, seq * 3600, bytes([0x41]) + bytes(65000)))
            await writer.drain()
            await asyncio.sleep(0.04)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    streaming: asyncio.Task | None = None
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, url = lines[0].split(" ")[:2]
            path = next(part for part in reversed(url.rstrip("/").split("/")) if not part.startswith("trackID"))
            cseq = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("cseq")), "0")
            if path == "slow":
                for byte in reply(cseq, body=SDP.encode()):
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(4)
            elif method == "DESCRIBE" and path == "huge-reply":
                writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Length: 2000000000\r\n\r\n".encode())
                writer.write(b"v=0\r\n" * 1000)
            elif method == "DESCRIBE" and path == "garbage-sdp":
                writer.write(reply(cseq, body=b"\x00\x01 this is not a session description \xff" * 3))
            elif method == "DESCRIBE":
                writer.write(reply(cseq, f"Content-Base: {url}/\r\nContent-Type: application/sdp\r\n", SDP.encode()))
            elif method == "SETUP":
                transport = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                writer.write(reply(cseq, transport + "Session: 1234;timeout=60\r\n"))
            elif method == "PLAY":
                writer.write(reply(cseq, "Session: 1234\r\n"))
                streaming = asyncio.get_running_loop().create_task(stream(path, writer))
            else:
                writer.write(reply(cseq))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        if streaming is not None:
            streaming.cancel()
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

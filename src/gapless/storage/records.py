"""The chunk file format: self-describing, checksummed records, and a scan that survives damage.

A chunk file is a sequence of records; each record is
``b"GLR1" | kind (1 byte, I=init, F=fragment) | header length (u32) | payload length (u64) |
header JSON | payload``. The header names camera, run, sequence number, camera time and the
payload's SHA-256, so the index can be rebuilt from the chunk files alone.

The scan never gives up on a file at the first bad byte: a record whose framing holds but whose
payload fails its checksum is reported as corrupt and the scan goes on after it; bytes that do not
frame a record (a flipped magic, length or header byte) are reported as one damaged span up to the
next valid record. Only an incomplete record at the very end of the file, with no valid record
after it, is a torn tail: what a crash mid-append leaves, and the only thing recovery may cut.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"GLR1"
_HEAD = struct.Struct(">4scIQ")
#: Longest record header accepted while scanning (a real one is a few hundred bytes).
MAX_HEADER = 64 << 10


def record_head(kind: bytes, header: dict, payload_length: int) -> bytes:
    """Everything of a record before its payload; the payload is written after it unchanged (the
    writer never copies a fragment's bytes to frame them: each copy of the video costs CPU)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(MAGIC, kind, len(head), payload_length) + head


@dataclass(frozen=True, slots=True)
class Record:
    """A record found by the scan. `valid`: its payload matches its checksum. A damaged span that
    frames no record has kind b"" and header None."""

    offset: int
    kind: bytes
    header: dict | None
    payload_at: int
    length: int
    valid: bool
    reason: str = ""

    @property
    def end(self) -> int:
        return self.payload_at + self.length


def _framed(data: bytes, pos: int) -> Record | str:
    """The record framed at pos (valid or with a bad checksum), or why nothing is framed there:
    "torn" when it is a record cut short by the end of the data."""
    if pos + _HEAD.size > len(data):
        return "torn"
    magic, kind, hlen, plen = _HEAD.unpack_from(data, pos)
    if magic != MAGIC or kind not in (b"I", b"F") or hlen > MAX_HEADER:
        return "no record header"
    body = pos + _HEAD.size
    if body + hlen + plen > len(data):
        return "torn"
    try:
        header = json.loads(data[body : body + hlen])
    except ValueError:
        return "record header is not JSON"
    if not isinstance(header, dict):
        return "record header is not an object"
    payload_at = body + hlen
    valid = hashlib.sha256(data[payload_at : payload_at + plen]).hexdigest() == header.get("sha256")
    return Record(pos, kind, header, payload_at, plen, valid, "" if valid else "payload fails its checksum")


def _next_valid(data: bytes, after: int) -> Record | None:
    at = data.find(MAGIC, after)
    while at >= 0:
        found = _framed(data, at)
        if isinstance(found, Record) and found.valid:
            return found
        at = data.find(MAGIC, at + 1)
    return None


def scan_records(data: bytes, start: int = 0) -> Iterator[Record]:
    """Every record of data[start:], valid or corrupt, and damaged spans between them, in order.
    Stops at a torn tail: the caller may cut the data where the last yielded item ends."""
    pos = start
    while pos < len(data):
        found = _framed(data, pos)
        if isinstance(found, Record):
            yield found
            pos = found.end
            continue
        resync = _next_valid(data, pos + 1)
        if resync is None:
            if found == "torn" and data.startswith(MAGIC[: len(data) - pos], pos):
                return  # a record cut short at the very end: a torn tail
            resync_at, reason = len(data), f"{found} (to the end of the file)"
        else:
            resync_at, reason = resync.offset, found
        yield Record(pos, b"", None, pos, resync_at - pos, False, reason)
        pos = resync_at

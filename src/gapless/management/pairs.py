"""Asymmetrical pairs on the management server: proposals between two independent recorders'
cameras (identity/mapping.py), accepting and rejecting them (each a new configuration version, so
they persist and reach both recorders, whose paired cameras then backfill from each other)."""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web
from pydantic import Field, ValidationError

from gapless.common.config import ID_PATTERN, describe_errors
from gapless.common.http import error
from gapless.common.openapi import Query, Reply, documented
from gapless.config.cluster import CameraPair, CameraRef, ClusterDocument
from gapless.config.recorder import CameraConfig
from gapless.identity.mapping import Mapping, Proposal, propose
from gapless.management.access import allow

log = logging.getLogger("gapless.management")


class Store(Protocol):
    @property
    def document(self) -> tuple[int, ClusterDocument]: ...

    def save(self, document: ClusterDocument, expected_version: int | None) -> int | None: ...


class Between(Query):
    a: str = Field(pattern=ID_PATTERN)
    """The first recorder (its cameras are the primaries of what is accepted)."""
    b: str = Field(pattern=ID_PATTERN)
    """The second recorder."""


class PairList(Reply):
    version: int
    pairs: list[CameraPair]
    rejected_pairs: list[CameraPair]


class Accepted(Reply):
    version: int
    accepted: list[CameraPair]


def proposals_between(
    a: str,
    cameras_a: list[CameraConfig],
    b: str,
    cameras_b: list[CameraConfig],
    pairs: list[CameraPair],
    rejected_pairs: list[CameraPair],
) -> Mapping:
    """Proposals between two recorders' cameras, leaving out cameras already paired and pairs a
    person rejected (the recorders may be under one management server or two)."""
    paired = {side for pair in pairs for side in pair.cameras()}
    sides = [
        [c for c in cameras if (recorder, c.id) not in paired] for recorder, cameras in ((a, cameras_a), (b, cameras_b))
    ]
    rejected = {pair.cameras() for pair in rejected_pairs}
    mapping = propose(sides[0], sides[1])
    kept = [p for p in mapping.proposals if ((a, p.a), (b, p.b)) not in rejected]
    return Mapping(proposals=kept, warnings=mapping.warnings)


def proposals(document: ClusterDocument, a: str, b: str) -> Mapping:
    """Proposals between two independent recorders of this document."""
    cameras = []
    for recorder_id in (a, b):
        entry = document.recorder(recorder_id)
        if entry is None or entry.cameras is None:
            raise error(web.HTTPNotFound, f"no independent recorder {recorder_id!r} with cameras in the configuration")
        cameras.append(entry.cameras)
    return proposals_between(a, cameras[0], b, cameras[1], document.pairs, document.rejected_pairs)


def as_pair(a: str, b: str, proposal: Proposal) -> CameraPair:
    return CameraPair(
        a=CameraRef(recorder=a, camera=proposal.a),
        b=CameraRef(recorder=b, camera=proposal.b),
        kind=proposal.kind,
        reasons=proposal.reasons,
    )


def _stored(store: Store, document: ClusterDocument, version: int, what: str) -> int:
    stored = store.save(document, version)
    if stored is None:
        raise error(web.HTTPPreconditionFailed, "the configuration changed meanwhile; ask again")
    log.info("configuration version %d stored: %s", stored, what)
    return stored


def pair_routes(store: Store) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/api/v1/pairs")
    @documented("Accepted and rejected camera pairs", PairList)
    @allow("viewer")  # the console's overview shows each pair's health
    async def list_pairs(_request: web.Request) -> web.Response:
        version, document = store.document
        listing = PairList(version=version, pairs=document.pairs, rejected_pairs=document.rejected_pairs)
        return web.json_response(text=listing.model_dump_json())

    @routes.get("/api/v1/pairs/proposals")
    @documented("Which camera of recorder a is which of recorder b: reasons, conflicts", Mapping, query=Between)
    async def list_proposals(_request: web.Request, query: Between) -> web.Response:
        _version, document = store.document
        return web.json_response(text=proposals(document, query.a, query.b).model_dump_json())

    @routes.post("/api/v1/pairs")
    @documented("Accept a pair (a new configuration version)", Accepted, body=CameraPair)
    async def accept(_request: web.Request, body: CameraPair) -> web.Response:
        version, document = store.document
        rejected = [p for p in document.rejected_pairs if p.cameras() != body.cameras()]
        updated = _validated(document, pairs=[*document.pairs, body], rejected_pairs=rejected)
        stored = _stored(store, updated, version, f"pair {body.a} = {body.b} accepted")
        return web.json_response(text=Accepted(version=stored, accepted=[body]).model_dump_json())

    @routes.post("/api/v1/pairs/accept-exact")
    @documented("Accept every proposal of an exact hardware identity with no conflict", Accepted, query=Between)
    async def accept_exact(_request: web.Request, query: Between) -> web.Response:
        version, document = store.document
        found = proposals(document, query.a, query.b).proposals
        chosen = [as_pair(query.a, query.b, p) for p in found if p.auto_acceptable]
        if not chosen:
            return web.json_response(text=Accepted(version=version, accepted=[]).model_dump_json())
        updated = _validated(document, pairs=[*document.pairs, *chosen])
        stored = _stored(store, updated, version, f"{len(chosen)} exact pairs accepted")
        return web.json_response(text=Accepted(version=stored, accepted=chosen).model_dump_json())

    @routes.post("/api/v1/pairs/reject")
    @documented("Reject a proposal: never proposed again (an accepted pair is dissolved)", Accepted, body=CameraPair)
    async def reject(_request: web.Request, body: CameraPair) -> web.Response:
        version, document = store.document
        pairs = [p for p in document.pairs if p.cameras() != body.cameras()]
        rejected = [*(p for p in document.rejected_pairs if p.cameras() != body.cameras()), body]
        updated = _validated(document, pairs=pairs, rejected_pairs=rejected)
        stored = _stored(store, updated, version, f"pair {body.a} = {body.b} rejected")
        return web.json_response(text=Accepted(version=stored, accepted=[]).model_dump_json())

    return routes


def _validated(
    document: ClusterDocument, pairs: list[CameraPair], rejected_pairs: list[CameraPair] | None = None
) -> ClusterDocument:
    """The document with these pairs, validated whole (a camera in two pairs, or not a camera of an
    independent recorder: 409 saying so)."""
    data = document.model_dump()
    data["pairs"] = [pair.model_dump() for pair in pairs]
    if rejected_pairs is not None:
        data["rejected_pairs"] = [pair.model_dump() for pair in rejected_pairs]
    try:
        return ClusterDocument.model_validate(data)
    except ValidationError as exc:
        raise error(web.HTTPConflict, describe_errors(exc, "pairs").replace("\n", ";")) from None

"""Mapping cameras between two recorders: the right pairs with their reasons; nothing ambiguous is
auto-acceptable; an address or a name is never called an identity. Pure logic, in milliseconds."""

from __future__ import annotations

import pytest

from gapless.config.recorder import CameraConfig, CameraIdentity
from gapless.identity.mapping import propose, stream_source

DOME = {"manufacturer": "Acme", "model": "DOME-4K"}


def unit(n: int, **extra) -> CameraIdentity:
    return CameraIdentity(
        endpoint=f"urn:uuid:{n:08d}-0000-4000-8000-000000000000",
        serial=f"ACME-{n:04d}",
        macs=[f"00:11:22:33:44:{n:02x}"],
        **DOME,
        **extra,
    )


def camera(id_: str, url: str, identity: CameraIdentity | None = None, name: str | None = None) -> CameraConfig:
    return CameraConfig(id=id_, url=url, identity=identity, name=name)


def pairs(mapping) -> dict[tuple[str, str], object]:
    return {(p.a, p.b): p for p in mapping.proposals}


def test_hardware_identity_pairs_cameras_whatever_their_names_and_addresses():
    a = [camera("lobby", "rtsp://10.0.0.5/live", unit(1)), camera("gate", "rtsp://10.0.0.6/live", unit(2))]
    b = [camera("entrance-hall", "rtsp://10.0.0.77/live", unit(1)), camera("cam-2", "rtsp://10.0.0.8/x", unit(2))]
    found = pairs(propose(a, b))
    assert set(found) == {("lobby", "entrance-hall"), ("gate", "cam-2")}
    lobby = found[("lobby", "entrance-hall")]
    assert lobby.kind == "identity" and lobby.confidence == 1.0 and lobby.auto_acceptable and not lobby.conflicts
    assert any("serial ACME-0001" in r for r in lobby.reasons) and any("MAC" in r for r in lobby.reasons)


def test_a_swapped_dhcp_address_is_reported_and_never_paired_by_address():
    """rec-b's camera at .5 is now the second unit: the address agrees, the device does not."""
    a = [camera("lobby", "rtsp://10.0.0.5/live", unit(1)), camera("gate", "rtsp://10.0.0.6/live", unit(2))]
    b = [camera("lobby", "rtsp://10.0.0.5/live", unit(2)), camera("gate", "rtsp://10.0.0.6/live", unit(1))]
    mapping = propose(a, b)
    found = pairs(mapping)
    assert set(found) == {("lobby", "gate"), ("gate", "lobby")}  # by identity, crosswise
    assert all(p.kind == "identity" for p in found.values())
    assert any("lobby / lobby: the same address, but different devices" in w for w in mapping.warnings), mapping


def test_the_channels_of_one_encoder_pair_only_with_the_same_channel():
    encoder = {"endpoint": "urn:uuid:33333333-3333-4333-8333-333333333333", "serial": "ENC-7", "video_sources": 4}
    a = [
        camera(f"dock-{n}", f"rtsp://10.0.0.9/ch{n}", CameraIdentity(**encoder, video_source=f"VS{n}")) for n in (0, 1)
    ]
    b = [camera(f"d{n}", f"rtsp://enc.local/ch{n}", CameraIdentity(**encoder, video_source=f"VS{n}")) for n in (1, 0)]
    found = pairs(propose(a, b))
    assert set(found) == {("dock-0", "d0"), ("dock-1", "d1")}
    assert all(p.auto_acceptable and "same video source" in p.reasons[-1] for p in found.values())


def test_a_url_only_match_is_not_called_exact():
    a = [camera("lobby", "rtsp://admin:pw@10.0.0.5:554/Streaming/Channels/101")]
    b = [camera("hall", "rtsp://viewer:other@10.0.0.5/Streaming/Channels/102")]
    (proposal,) = propose(a, b).proposals
    assert proposal.kind == "source" and proposal.confidence < 1 and not proposal.auto_acceptable
    assert "10.0.0.5:554/streaming/channels/1" in proposal.reasons[0]


@pytest.mark.parametrize(
    ("main", "sub"),
    [
        (
            "rtsp://10.0.0.5/cam/realmonitor?channel=2&subtype=0",
            "rtsp://u:p@10.0.0.5:554/cam/realmonitor?subtype=1&channel=2",
        ),
        ("rtsp://10.0.0.5/Streaming/Channels/301", "rtsp://10.0.0.5/Streaming/Channels/302"),
        ("rtsp://10.0.0.5/cam0", "rtsp://10.0.0.5/cam0-sub"),
        ("rtsp://10.0.0.5/live/main", "rtsp://10.0.0.5/live/sub"),
    ],
)
def test_profile_markers_and_credentials_do_not_make_another_source(main, sub):
    assert stream_source(main) == stream_source(sub)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("rtsp://10.0.0.5/cam/realmonitor?channel=1&subtype=0", "rtsp://10.0.0.5/cam/realmonitor?channel=2&subtype=0"),
        ("rtsp://10.0.0.5/Streaming/Channels/101", "rtsp://10.0.0.5/Streaming/Channels/201"),
        ("rtsp://10.0.0.5/cam0", "rtsp://10.0.0.6/cam0"),
        ("rtsp://10.0.0.5:554/cam0", "rtsp://10.0.0.5:8554/cam0"),
    ],
)
def test_another_channel_host_or_port_is_another_source(one, other):
    assert stream_source(one) != stream_source(other)


def test_two_units_of_one_model_known_only_by_model_are_never_auto_accepted():
    """Identities that say only the model: the cameras pair by address, flagged, never unasked."""
    model_only = CameraIdentity(**DOME)
    a = [camera(f"c{n}", f"rtsp://10.0.0.{n}/live", model_only) for n in (1, 2, 3)]
    b = [camera(f"x{n}", f"rtsp://10.0.0.{n}/live", model_only) for n in (1, 2, 3)]
    found = pairs(propose(a, b))
    assert set(found) == {("c1", "x1"), ("c2", "x2"), ("c3", "x3")}
    for proposal in found.values():
        assert proposal.kind == "source" and not proposal.auto_acceptable
        assert any("6 cameras are a Acme DOME-4K" in c for c in proposal.conflicts), proposal


def test_one_camera_matching_two_is_a_conflict_on_both():
    a = [camera("yard", "rtsp://10.0.0.5/cam0")]
    b = [camera("yard-main", "rtsp://10.0.0.5/cam0"), camera("yard-sub", "rtsp://10.0.0.5/cam0-sub")]
    found = pairs(propose(a, b))
    assert set(found) == {("yard", "yard-main"), ("yard", "yard-sub")}
    assert all("yard also matches" in p.conflicts[0] and not p.auto_acceptable for p in found.values())


def test_an_identity_that_disagrees_in_one_field_is_not_accepted_unasked():
    a = [camera("lobby", "rtsp://10.0.0.5/live", unit(1))]
    b = [camera("lobby", "rtsp://10.0.0.5/live", unit(1, hardware_id="x").model_copy(update={"serial": "ACME-9999"}))]
    mapping = propose(a, b)
    assert not mapping.proposals  # the endpoint and MAC agree, the serial does not: a person decides
    assert "identities disagree" in mapping.warnings[0]


def test_names_alike_are_a_hint_and_unlike_names_nothing():
    a = [camera("front-door", "rtsp://10.0.0.5/a", name="Front Door"), camera("garage", "rtsp://10.0.0.6/a")]
    b = [camera("frontdoor", "rtsp://10.0.1.5/b"), camera("roof", "rtsp://10.0.1.6/b")]
    (proposal,) = propose(a, b).proposals
    assert (proposal.a, proposal.b, proposal.kind) == ("front-door", "frontdoor", "name")
    assert proposal.confidence < 0.5 and not proposal.auto_acceptable

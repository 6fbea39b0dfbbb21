"""The recorder's RTSP client on its own: camera URLs, session descriptions, and Digest answers
checked against RFC 2617's own worked example (not against our simulator)."""

import pytest

from gapless.common.config import ConfigError
from gapless.common.urls import parse_camera_url, redact_url
from gapless.config.recorder import load_recorder_config
from gapless.ingest.rtsp import CameraFault, RtspClient, UnsupportedStream, parse_sdp


def test_vendor_urls_keep_their_query_and_credentials_are_decoded():
    camera = parse_camera_url("rtsp://admin:p%40ss%3Aw%2Frd@192.0.2.10/cam/realmonitor?channel=1&subtype=0")
    assert (camera.username, camera.password) == ("admin", "p@ss:w/rd")
    assert camera.request_url == "rtsp://192.0.2.10:554/cam/realmonitor?channel=1&subtype=0"
    assert redact_url("rtsp://admin:secret@192.0.2.10:8554/x") == "rtsp://192.0.2.10:8554/x"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("rtsp://192.0.2.10:99999/x", "out of range"),
        ("rtsp:///nohost", "has no host"),
        ("rtsps://192.0.2.10/x", "rtsps:// (RTSP over TLS) is not supported yet"),
        ("http://192.0.2.10/x", "must start with rtsp://"),
    ],
)
def test_bad_camera_urls_are_refused_at_config_time_with_the_field_named(tmp_path, url, says):
    path = tmp_path / "rec.yaml"
    path.write_text(
        f"recorder: {{id: r, storage: {tmp_path}, api_token: '0123456789abcdef'}}\ncameras: [{{id: c, url: '{url}'}}]\n"
    )
    with pytest.raises(ConfigError) as error:
        load_recorder_config(path)
    assert "cameras.0.url" in str(error.value) and says in str(error.value)


SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=cam\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("control", "setup_url"),
    [
        ("trackID=1", "rtsp://192.0.2.10:554/live?ch=1/trackID=1"),
        ("rtsp://192.0.2.10:554/live/track1", "rtsp://192.0.2.10:554/live/track1"),
        ("*", "rtsp://192.0.2.10:554/live?ch=1"),
    ],
)
def test_control_urls_relative_absolute_and_aggregate(control, setup_url):
    audio = "m=audio 0 RTP/AVP 0\r\na=control:trackID=0\r\n"
    sdp = SDP_HEAD + audio + f"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:{control}\r\n"
    info, url = parse_sdp(sdp, "rtsp://192.0.2.10:554/live?ch=1")
    assert (info.codec, info.clock_rate, url) == ("h264", 90_000, setup_url)


def test_h265_parameter_sets_come_from_sprop_vps_sps_pps():
    sdp = SDP_HEAD + "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n"
    sdp += "a=fmtp:96 sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHB\r\n"
    info, _ = parse_sdp(sdp, "rtsp://h/x")
    assert (info.codec, info.parameter_sets) == ("h265", [b"@\x01\x0c", b"B\x01\x01", b"D\x01\xc1"])


def test_sessions_without_video_and_garbage_are_refused_in_words():
    with pytest.raises(UnsupportedStream, match="no video track"):
        parse_sdp(SDP_HEAD + "m=audio 0 RTP/AVP 0\r\n", "rtsp://h/x")
    with pytest.raises(UnsupportedStream, match="unsupported codec mjpeg"):
        parse_sdp(SDP_HEAD + "m=video 0 RTP/AVP 26\r\na=rtpmap:26 JPEG/90000\r\n", "rtsp://h/x")
    with pytest.raises(CameraFault, match="not a session description"):
        parse_sdp("\x00\x01garbage", "rtsp://h/x")


def test_digest_with_qop_matches_rfc_2617s_example():
    """RFC 2617 section 3.5: Mufasa / Circle Of Life, GET /dir/index.html."""
    client = RtspClient("rtsp://h/x", "test", "Mufasa", "Circle Of Life")
    client._choose_auth(
        'Basic realm="testrealm@host.com"\nDigest realm="testrealm@host.com", qop="auth,auth-int",'
        ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert client.auth_scheme == "digest", "Digest is chosen when both are offered"
    answer = client._auth_for("GET", "/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in answer
    assert "nc=00000001" in answer and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in answer

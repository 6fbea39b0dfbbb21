"""An RTSP camera Gapless did not write: GStreamer's gst-rtsp-server (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-*), run by the system's Python.

`python3 tests/gst_camera.py PORT` serves /cam: a live 640x360 25 fps test pattern, x264, GOP 2 s,
as one *shared* media (every client gets the same stream, as from a real camera); /cam-aac and
/cam-pcmu add an audio track (voaacenc AAC 16 kHz over rtpmp4gpay, RFC 3640; mulawenc G.711 over
rtppcmupay). Prints "ready" once listening; SIGTERM or SIGINT stop it.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

VIDEO = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=50 bitrate=800 "
    "! rtph264pay name=pay0 pt=96 config-interval=1"
)
TONE = "audiotestsrc is-live=true wave=ticks ! audio/x-raw,channels=1,rate={rate}"
MOUNTS = {
    "/cam": f"( {VIDEO} )",
    "/cam-aac": f"( {VIDEO} {TONE.format(rate=16000)} ! voaacenc bitrate=32000 ! rtpmp4gpay name=pay1 pt=97 )",
    "/cam-pcmu": f"( {VIDEO} {TONE.format(rate=8000)} ! mulawenc ! rtppcmupay name=pay1 )",
}


def main() -> None:
    port = sys.argv[1]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    for path, launch in MOUNTS.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()

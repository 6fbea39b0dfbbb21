"""Ingest: one camera's stream from RTSP to stored fragments (RTSP client, RTP depacketizers,
the shared stream reader, camera time, the GOP fragmenter)."""

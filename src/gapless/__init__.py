"""Gapless: zero-loss failover for video-surveillance recording."""

__version__ = "0.1.0"

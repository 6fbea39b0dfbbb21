"""Shared by every part of Gapless and depending on none: time parsing, configuration primitives,
camera URLs, signed URLs, HTTP helpers."""

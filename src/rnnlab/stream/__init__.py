"""Streaming inference: one step or one chunk at a time, exactly the full-sequence outputs."""

from .streamer import Streamer

__all__ = ["Streamer"]

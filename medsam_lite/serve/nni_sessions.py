"""nnInteractive's leases: ``/claim`` hands out a token (503 when ``max_sessions`` are held), every later call
names it in ``X-Lease-Token`` (410 when it is missing, unknown or reaped). A session is reaped when no real action
came for ``idle_seconds`` or no request at all (heartbeats included) for ``liveness_seconds``; reaping is done on
every request, so an abandoned session's volume is freed by the next client's first call."""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from medsam_lite.serve.uploads import UploadError


@dataclass
class NniSession:
    """One viewer's state: its volume as the model sees it and the current object's mask."""

    token: str
    last_active: float = field(default_factory=time.monotonic)  # last real action (not heartbeats)
    last_seen: float = field(default_factory=time.monotonic)  # last request of any kind
    image_key: str | None = None  # sha256 of the uint8 volume: slices are cached under it, shared by sessions
    volume: np.ndarray | None = None  # (D0, D1, D2) uint8 after the intensity rule
    rule: str = ""  # the intensity rule applied, for the log and set_image's answer
    target_dtype: np.dtype | None = None  # of the client's target buffer
    mask: np.ndarray | None = None  # (D0, D1, D2) bool: the current object (union of its boxes)
    do_autozoom: bool = False  # accepted and kept; the box propagation has no zoom
    lock: threading.Lock = field(default_factory=threading.Lock)  # one request of a session at a time


class SessionRegistry:
    def __init__(self, max_sessions: int, idle_seconds: float, liveness_seconds: float) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.liveness_seconds = liveness_seconds
        self._sessions: dict[str, NniSession] = {}
        self._lock = threading.Lock()

    def _expired(self, session: NniSession, now: float) -> bool:
        return now - session.last_active > self.idle_seconds or now - session.last_seen > self.liveness_seconds

    def sweep(self) -> int:
        """Drop expired sessions; how many."""
        now = time.monotonic()
        with self._lock:
            gone = [t for t, s in self._sessions.items() if self._expired(s, now)]
            for token in gone:
                del self._sessions[token]
        return len(gone)

    def claim(self) -> NniSession:
        self.sweep()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise UploadError(503, f"server is at capacity ({self.max_sessions} sessions, serve --max-sessions)")
            session = NniSession(secrets.token_urlsafe(24))
            self._sessions[session.token] = session
            return session

    def get(self, token: str | None, active: bool = True, seen: bool = True) -> NniSession:
        """The session of ``token`` (410 if none); ``active``: a real action (refreshes the idle clock)."""
        if not token:
            raise UploadError(410, "lease token missing: claim a session first (POST /claim)")
        self.sweep()
        with self._lock:
            session = self._sessions.get(token)
        if session is None:
            raise UploadError(410, "lease expired or unknown: claim a new session")
        now = time.monotonic()
        if seen:
            session.last_seen = now
        if active:
            session.last_active = now
        return session

    def release(self, token: str | None) -> bool:
        with self._lock:
            return self._sessions.pop(token or "", None) is not None

    def remaining(self, session: NniSession) -> float:
        return max(0.0, self.idle_seconds - (time.monotonic() - session.last_active))

    def __len__(self) -> int:
        return len(self._sessions)

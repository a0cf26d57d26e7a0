"""What ``serve`` is configured with."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20


@dataclass
class ServeSettings:
    """Limits in MiB/pixels; ``store_dir`` None: a temporary folder removed at shutdown."""

    host: str = "127.0.0.1"
    port: int = 8000
    cache_mb: int = 512  # slice embeddings (4 MiB each)
    store_mb: int = 2048  # uploaded images on disk
    max_upload_mb: int = 512
    max_pixels: int = 1 << 30  # voxels of an uploaded image, checked from its header before decoding
    queue_size: int = 8  # inference jobs waiting at most; more -> 503
    token: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    store_dir: Path | None = None

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

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
    modality: str | None = None  # intensity rule for viewer uploads without one in their metadata (CT, MR, other, raw)
    window: tuple[float, float] | None = None  # CT (level, width) HU; None: abdomen 40/400
    # slices a box drawn on one slice may propagate each way (None: the whole volume); 40 keeps a first box on a
    # new volume within nnInteractive's 60 s read timeout: 81 slices x 0.4 s (fp32 encoder, 2-core Xeon) = 32 s
    reach: int | None = 40
    max_sessions: int = 4  # nnInteractive leases held at once; more -> 503
    idle_seconds: float = 600.0  # a lease with no real action for this long is reaped
    liveness_seconds: float = 60.0  # a lease with no request at all (not even a heartbeat) for this long is reaped

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

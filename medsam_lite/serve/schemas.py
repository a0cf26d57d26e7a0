"""The service's contract: pydantic models of requests and replies (FastAPI's OpenAPI page shows them)."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, Field

MaskFormat = Literal["npz", "nifti", "png", "rle", "geojson"]


class ImageInfo(BaseModel):
    """An uploaded image. ``id`` is the sha256 of the uploaded bytes: uploading them again costs nothing."""

    id: str
    name: str = Field(description="display name (from the client's file name, never a path)")
    kind: Literal["npz", "medical", "picture"]
    is_3d: bool
    shape: list[int] = Field(description="of the model image: (D, H, W) for 3D, (H, W, 3) for 2D")
    boxes: list[list[int]] = Field(default_factory=list, description="boxes stored in a challenge npz")
    spacing: Optional[list[float]] = Field(None, description="(x, y, z) mm")
    geometry: Optional[dict] = Field(None, description="origin, spacing, direction of a medical image")
    modality: Optional[str] = Field(None, description="intensity rule applied (CT, MR, other, raw, picture)")
    has_gts: bool = False
    value_range: list[float] = Field([0.0, 255.0], description="min, max of the stored values (HU for CT)")
    existed: bool = Field(False, description="the same bytes were already stored")


class SegmentRequest(BaseModel):
    """Boxes in original pixels (array indices, maxima inclusive).

    2D image: ``[x_min, y_min, x_max, y_max]`` each. 3D image with ``slice``: 2D boxes on that slice -> an (H, W)
    mask. 3D without ``slice``: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` or CVPR 2025 dicts, propagated
    exactly as ``predict`` does -> (D, H, W). ``boxes`` null: the boxes stored in the uploaded npz."""

    boxes: Optional[list[Union[list[int], dict[str, int]]]] = None
    slice: Optional[int] = Field(None, ge=0)
    labels: Optional[list[int]] = Field(None, description="label value of each box (default 1..N)")


class LabelMap(BaseModel):
    """A label map as ``format=rle`` gives it: ``values[i]`` repeated ``lengths[i]`` times, row-major."""

    shape: list[int]
    values: list[int]
    lengths: list[int]


class Info(BaseModel):
    version: str
    engine: str
    precision: str  # the mode that runs (engines.precision.MODES), "fast=" before it when --precision fast chose it
    model_sha256: Optional[str]
    model: str
    cache: dict
    store: dict
    queue: dict


class SAMBody(BaseModel):
    """samapi 0.7.1's ``POST /sam/`` body (QuPath's SAM extension). ``type`` and ``checkpoint_url`` are accepted
    and ignored (one model is served); ``b64mask`` is ignored (LiteMedSAM takes no mask prompt)."""

    type: Optional[str] = "vit_t"
    bbox: Optional[list[int]] = Field(None, min_length=4, max_length=4, examples=[[0, 0, 10, 10]])
    point_coords: Optional[list[list[int]]] = Field(None, examples=[[[0, 0], [1, 0]]])
    point_labels: Optional[list[int]] = Field(None, examples=[[0, 1]])
    b64img: str
    b64mask: Optional[str] = None
    multimask_output: bool = False
    checkpoint_url: Optional[str] = None


class SAMAutoMaskBody(BaseModel):
    """samapi 0.7.1's ``POST /sam/automask/`` body, with its defaults."""

    type: Optional[str] = "vit_t"
    b64img: str
    points_per_side: Optional[int] = Field(32, ge=1, le=64)
    points_per_batch: int = Field(64, ge=1, description="accepted for samapi's sake (points are decoded one by one)")
    pred_iou_thresh: float = Field(0.88, allow_inf_nan=False)
    stability_score_thresh: float = Field(0.95, allow_inf_nan=False)
    stability_score_offset: float = Field(1.0, allow_inf_nan=False)
    box_nms_thresh: float = Field(0.7, allow_inf_nan=False)
    crop_n_layers: int = Field(0, ge=0, le=2)
    crop_nms_thresh: float = Field(0.7, allow_inf_nan=False)
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1)
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(0, ge=0)
    output_type: str = "Single mask"
    include_image_edge: bool = False
    checkpoint_url: Optional[str] = None


class SAMWeightsBody(BaseModel):
    type: str
    name: str
    url: str

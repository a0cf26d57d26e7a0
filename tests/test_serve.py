"""`medsam-lite serve`: the native API against `predict`, the embedding cache, samapi's contract as QuPath's
extension speaks it, FastMedSAM's flow, and refusals of bad or oversized input. In-process (FastAPI's
TestClient); the load and fault runs against a real server are `benchmarks/bench_serve.py`."""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main
from medsam_lite.io.polygons import rasterize

from .conftest import ROOT, shared_path
from .test_api import _predict_cli

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

DEMO = ROOT / "test_demo"
DEMO_2D = DEMO / "imgs/2DBox_Synthetic_ellipses.npz"
DEMO_3D = DEMO / "imgs/3DBox_Synthetic_ellipsoids.npz"


def make_client(export, **settings) -> TestClient:
    from medsam_lite.engines import create_engine
    from medsam_lite.serve.app import create_app
    from medsam_lite.serve.service import Service
    from medsam_lite.serve.settings import ServeSettings

    choice = create_engine("openvino", None, export, default_checkpoint=False)
    service = Service.start(ServeSettings(**settings), choice, choice.engine.manifest.checkpoint_sha256)
    return TestClient(create_app(service))


@pytest.fixture(scope="module")
def client(exports):
    with make_client(exports("seeded"), cache_mb=64, store_mb=256) as c:
        yield c


def _predict(folder, export, tmp_path, name):
    result = CliRunner().invoke(main, ["predict", "-i", str(folder), "-o", str(tmp_path / "segs"), "--export-dir",
                                       str(export), "-q"])
    assert result.exit_code == 0, result.stderr
    return np.load(tmp_path / "segs" / name)["segs"]


def _upload(client, path, name=None, **params):
    with open(path, "rb") as handle:
        reply = client.post("/v1/images", files={"file": (name or path.name, handle)}, params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _segs(reply) -> np.ndarray:
    assert reply.status_code == 200, reply.text
    return np.load(io.BytesIO(reply.content))["segs"]


# --- native API ---

def test_health_and_info(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["engine"] == "openvino" and info["precision"] == "f32" and len(info["model_sha256"]) == 64
    assert "/v1/images/{image_id}/segment" in client.get("/openapi.json").json()["paths"]
    described = client.get("/openapi.json").json()["info"]["description"]
    assert all(f" {status} " in described for status in (401, 404, 413, 415, 422, 503, 507))  # the error replies


def test_upload_id_is_the_sha256_and_a_second_upload_is_free(client):
    first = _upload(client, DEMO_2D)
    assert first["id"] == hashlib.sha256(DEMO_2D.read_bytes()).hexdigest() and not first["existed"]
    assert first["boxes"] == np.load(DEMO_2D)["boxes"].tolist() and first["kind"] == "npz" and not first["is_3d"]
    assert _upload(client, DEMO_2D)["existed"]


def test_2d_boxes_equal_predict_and_the_second_prompt_runs_the_decoder_only(client, exports, tmp_path):
    image_id = _upload(client, DEMO_2D)["id"]
    client.delete(f"/v1/images/{image_id}")  # start without cached embeddings
    image_id = _upload(client, DEMO_2D)["id"]
    first = client.post(f"/v1/images/{image_id}/segment", json={})
    second = client.post(f"/v1/images/{image_id}/segment", json={"boxes": None})
    assert first.headers["x-slices-encoded"] == "1" and second.headers["x-slices-encoded"] == "0"
    assert second.headers["x-slices-cached"] == "1"
    expected = _predict(DEMO_2D.parent, exports("seeded"), tmp_path, DEMO_2D.name)
    assert np.array_equal(_segs(first), expected) and np.array_equal(_segs(second), expected)


def test_3d_propagation_equals_predict_and_slice_boxes_equal_segment_2d(client, exports, ov_engines, tmp_path):
    from medsam_lite.pipeline.segment import segment_2d

    info = _upload(client, DEMO_3D)
    assert info["is_3d"] and info["shape"] == list(np.load(DEMO_3D)["imgs"].shape)
    reply = client.post(f"/v1/images/{info['id']}/segment", json={})
    assert np.array_equal(_segs(reply), _predict(DEMO_3D.parent, exports("seeded"), tmp_path, DEMO_3D.name))
    volume, boxes = np.load(DEMO_3D)["imgs"], np.load(DEMO_3D)["boxes"]
    z = int(boxes[0, 2] + boxes[0, 5]) // 2
    box_2d = [[int(boxes[0, 0]), int(boxes[0, 1]), int(boxes[0, 3]), int(boxes[0, 4])]]
    sliced = client.post(f"/v1/images/{info['id']}/segment", json={"boxes": box_2d, "slice": z, "labels": [7]})
    assert sliced.headers["x-slices-encoded"] == "0"  # encoded during the propagation
    want = segment_2d(ov_engines("seeded"), np.repeat(volume[z][:, :, None], 3, -1), np.array(box_2d)) * 7
    assert np.array_equal(_segs(sliced), want)


def test_mask_formats(client, tmp_path):
    from medsam_lite.io.image import Geometry

    from .imagefiles import ORIGIN, oblique_direction, write_medical

    info = _upload(client, DEMO_2D)
    url = f"/v1/images/{info['id']}/segment"
    labels = _segs(client.post(url, json={}))
    png = client.post(url, json={}, params={"format": "png"})
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_UNCHANGED), labels)
    runs = client.post(url, json={}, params={"format": "rle"}).json()
    assert np.array_equal(np.repeat(runs["values"], runs["lengths"]).reshape(runs["shape"]), labels)
    collection = client.post(url, json={}, params={"format": "geojson"}).json()
    assert collection["type"] == "FeatureCollection"
    for feature in collection["features"]:
        polygons = feature["geometry"]["coordinates"]
        polygons = [polygons] if feature["geometry"]["type"] == "Polygon" else polygons
        assert np.array_equal(rasterize(polygons, labels.shape), labels == feature["properties"]["label"])
    # a NIfTI upload gets its geometry back
    sitk = pytest.importorskip("SimpleITK")
    volume = np.load(DEMO_3D)["imgs"]
    path = write_medical(tmp_path / "ct_0000.nii.gz", volume, (0.7, 0.8, 2.5))
    medical = _upload(client, path, modality="raw")
    assert medical["kind"] == "medical" and medical["is_3d"] and medical["modality"] == "raw"
    boxes = np.load(DEMO_3D)["boxes"].tolist()
    nifti = client.post(f"/v1/images/{medical['id']}/segment", json={"boxes": boxes}, params={"format": "nifti"})
    assert nifti.status_code == 200, nifti.text
    (tmp_path / "out.nii.gz").write_bytes(nifti.content)
    written = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    got = Geometry(written.GetOrigin(), written.GetSpacing(), written.GetDirection())
    assert got.matches(Geometry(ORIGIN, (0.7, 0.8, 2.5), oblique_direction()))
    npz_case = client.post(f"/v1/images/{_upload(client, DEMO_3D)['id']}/segment", json={}).content
    assert np.array_equal(sitk.GetArrayFromImage(written), np.load(io.BytesIO(npz_case))["segs"])
    refused = client.post(f"/v1/images/{medical['id']}/segment", json={"boxes": boxes}, params={"format": "png"})
    assert refused.status_code == 422 and "PNG holds a 2D label map" in refused.json()["detail"]


def test_delete_and_unknown_ids(client):
    info = _upload(client, DEMO_2D)
    assert client.delete(f"/v1/images/{info['id']}").status_code == 204
    for image_id in (info["id"], "../../etc/passwd", "0" * 64):
        reply = client.post(f"/v1/images/{image_id}/segment", json={})
        assert reply.status_code in (404, 405) or "no image" in reply.text
    assert client.get(f"/v1/images/{info['id']}").status_code == 404


def test_one_shot_equals_predict_on_test_demo(client, exports, tmp_path):
    for case in (DEMO_2D, DEMO_3D):
        with open(case, "rb") as handle:
            reply = client.post("/v1/predict", files={"file": (case.name, handle)})
        assert np.array_equal(_segs(reply), _predict(case.parent, exports("seeded"), tmp_path, case.name))


SHARED_CASES = ["2DBox_Mammography_demo.npz", "2DBox_Microscopy_SELMA3D_nuclei_004_z060.npz",
                *(f"2DBox_XRay_Pneumothorax-Masks_{n}_train_1.npz" for n in (2041, 2042, 2043, 2044, 2046, 2048)),
                "3DBox_CT_Lesion_000001_02_01_008-023.npz", "3DBox_CT_Lesion_000002_03_01_035-047.npz",
                "3DBox_CT_Lesion_000009_03_01_036-048.npz", "3DBox_CT_Lesion_000010_01_01_078-090.npz",
                "3DBox_CT_AMOS_amos_0018.npz"]
# Left out of the service's run: the two longest volumes (BraTS, 70 slices; microscopy, 134 slices and 24 boxes),
# 134 of the 189 s `predict` took on cases/ (2026-12-06, Xeon), paid twice here. Their path through the service is
# AMOS's (a multi-label volume through the same segment_3d); `predict` on them is held to the official script's
# outputs by the Docker test and scripts/check_fidelity.py.
LONG_VOLUMES = ["3DBox_MR_BraTS-T1c_bratsgli_0017.npz", "3DBox_Microscopy_SELMA3D_patchvolume_nuclei_004.npz"]


@pytest.mark.slow
def test_one_shot_equals_predict_on_the_shared_cases(exports, checkpoint_path, tmp_path):
    """The shared cases but the two longest volumes through POST /v1/predict with the demo checkpoint, against
    one `predict` run on them: identical segs."""
    folder = shared_path("cases", "imgs")
    assert sorted(p.name for p in folder.glob("*.npz")) == sorted(SHARED_CASES + LONG_VOLUMES)
    cli = _predict_cli(tmp_path, [folder / name for name in SHARED_CASES], exports("demo"), checkpoint_path("demo"))
    with make_client(exports("demo")) as c:
        for name in SHARED_CASES:
            with open(folder / name, "rb") as handle:
                reply = c.post("/v1/predict", files={"file": (name, handle)})
            assert np.array_equal(_segs(reply), cli[name]), name


# --- samapi, as QuPath's SAM extension sends it ---

def _png_b64(image: np.ndarray) -> str:
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    return base64.b64encode(png.tobytes()).decode()


def _qupath_post(client, path, payload: dict):
    """As the extension does: Gson without nulls, 'application/json; charset=utf-8'."""
    body = json.dumps({k: v for k, v in payload.items() if v is not None})
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json; charset=utf-8"})


def _parse_features(text: str) -> list[dict]:
    """As the extension's Utils.parsePathObjects: an array of Features (or a FeatureCollection)."""
    element = json.loads(text)
    if isinstance(element, dict) and "features" in element:
        element = element["features"]
    assert isinstance(element, list)
    for feature in element:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert isinstance(feature["properties"]["quality"], float) and feature["properties"]["label"] == "object"
        assert isinstance(feature["properties"]["object_idx"], int)
    return element


def _feature_mask(feature: dict, shape) -> np.ndarray:
    coordinates = feature["geometry"]["coordinates"]
    polygons = [coordinates] if feature["geometry"]["type"] == "Polygon" else coordinates
    return rasterize([[[tuple(p) for p in ring] for ring in polygon] for polygon in polygons], shape)


def test_samapi_box_and_points_contract(client, ov_engines):
    from medsam_lite.pipeline.prompting import prompt_masks, sam_prompt
    from medsam_lite.pipeline.segment import encode_image

    image = np.load(DEMO_2D)["imgs"][20:180, 10:200]  # a crop, as QuPath sends the viewed region
    b64 = _png_b64(image)
    engine = ov_engines("seeded")
    embedding = encode_image(engine, image)
    requests = [  # (payload, points, labels, box, multimask)
        ({"type": "vit_l", "bbox": [30, 40, 120, 130], "b64img": b64, "multimask_output": False,
          "checkpoint_url": "https://example.invalid/x.pth"}, None, None, [30, 40, 120, 130], False),
        ({"type": "vit_l", "point_coords": [[5, 5], [70, 80]], "point_labels": [0, 1], "b64img": b64,
          "multimask_output": True}, [[5, 5], [70, 80]], [0, 1], None, True),
    ]
    before = client.get("/v1/info").json()["cache"]["misses"]
    for payload, points, labels, box, multimask in requests:
        reply = _qupath_post(client, "/sam/", payload)
        assert reply.status_code == 200, reply.text
        features = _parse_features(reply.text)
        coords, kinds = sam_prompt(image.shape[:2], None if points is None else np.array(points),
                                   None if labels is None else np.array(labels), None if box is None else np.array(box))
        expected = [m for m in prompt_masks(engine, embedding, coords, kinds, image.shape[:2], multimask) if m.mask.any()]
        assert len(features) == len(expected) == (3 if multimask else 1) or len(features) == len(expected)
        for feature, want in zip(features, expected):
            assert np.array_equal(_feature_mask(feature, image.shape[:2]), want.mask)
            assert feature["properties"]["quality"] == pytest.approx(want.iou, abs=1e-6)
    info = client.get("/v1/info").json()["cache"]
    assert info["misses"] - before == 1  # the same base64 image twice: encoded once


def test_samapi_housekeeping_endpoints(client):
    for model_type in ("vit_h", "vit_l", "vit_b", "vit_t", "sam2_l", "sam3", "anything"):
        weights = client.get("/sam/weights/", params={"type": model_type}).json()
        assert len(weights) >= 1 and weights[0]["type"] == model_type and set(weights[0]) == {"type", "name", "url"}
    assert len(client.get("/sam/weights/").json()) >= 1
    said = _qupath_post(client, "/sam/weights/", {"type": "vit_t", "name": "mine", "url": "https://x.invalid/a.pth"})
    assert said.status_code == 200 and "already exists. Skip registration." in said.text and "one model" in said.text
    assert "samapi" in client.get("/sam/version/").text
    assert client.get("/sam/progress/").json() == {"message": None, "percent": -1}
    assert client.get("/sam/weights/cancel/").text == "Cancel signal sent"


def test_samapi_automask(client):
    image = np.load(DEMO_2D)["imgs"]
    payload = {"b64img": _png_b64(image), "points_per_side": 4, "pred_iou_thresh": -100.0, "stability_score_thresh": 0.0,
               "box_nms_thresh": 0.7, "output_type": "Multi-mask (best quality)", "min_mask_region_area": 20}
    reply = _qupath_post(client, "/sam/automask/", payload)
    assert reply.status_code == 200, reply.text
    features = _parse_features(reply.text)
    assert 1 <= len(features) <= 16
    masks = [_feature_mask(f, image.shape[:2]) for f in features]
    assert all(m.any() for m in masks)
    bad = _qupath_post(client, "/sam/automask/", {**payload, "output_type": "Every mask"})
    assert bad.status_code == 422 and "output_type" in bad.json()["detail"]


# --- FastMedSAM ---

def test_fastmedsam_upload_and_segment(client, ov_engines, tmp_path):
    from medsam_lite.io.prompts import tight_boxes, widen_thin_boxes
    from medsam_lite.pipeline.segment import segment_2d

    volume = np.load(DEMO_3D)["imgs"]
    gts = np.load(DEMO / "gts/3DBox_Synthetic_ellipsoids.npz")["gts"]
    case = tmp_path / "../evil name.npz"
    np.savez_compressed(tmp_path / "case.npz", imgs=volume, gts=gts, spacing=np.array([0.7, 0.8, 2.5]))
    with open(tmp_path / "case.npz", "rb") as handle:
        reply = client.post("/upload/", files={"file": ("../../3DBox_evil name.npz", handle)})
    assert reply.status_code == 200, reply.text
    filename = reply.json()["filename"]
    assert "/" not in filename and filename.endswith(".npz") and not case.exists()
    out = client.get("/segment/", params={"filename": filename})
    assert out.status_code == 200 and out.headers["content-type"] == "application/octet-stream"
    with np.load(io.BytesIO(out.content)) as data:
        assert sorted(data.files) == ["gts", "imgs", "segs", "spacing"]
        assert np.array_equal(data["imgs"], volume) and np.array_equal(data["gts"], gts)
        segs = data["segs"]
    engine = ov_engines("seeded")
    for z in range(len(gts)):
        values, boxes = tight_boxes(gts[z])
        widen_thin_boxes(boxes, gts[z].shape)  # a one-pixel-wide label's box gets a second pixel
        want = np.zeros(gts[z].shape, np.uint8)
        if len(values):
            want = np.array([0, *values], np.uint8)[segment_2d(engine, np.repeat(volume[z][:, :, None], 3, -1), boxes)]
        assert np.array_equal(segs[z], want), z
    assert client.get("/segment/", params={"filename": "nothing.npz"}).status_code == 404


# --- refusals ---

def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with one tiny IDAT: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_bad_input_gets_a_4xx_with_a_message(client, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    np.savez(tmp_path / "evil.npz", imgs=np.zeros((8, 8, 3), np.uint8), boxes=np.array([Evil()], dtype=object))
    cases = [
        ("npz with a pickle", lambda: client.post("/v1/images", files={"file": ("2DBox_e.npz", open(tmp_path / "evil.npz", "rb"))}), 422),
        ("not an image", lambda: client.post("/v1/images", files={"file": ("x.bin", b"hello world")}), 415),
        ("truncated npz", lambda: client.post("/v1/images", files={"file": ("2DBox_t.npz", DEMO_2D.read_bytes()[:500])}), 422),
        ("bomb", lambda: client.post("/v1/images", files={"file": ("b.png", _png_header_claiming(100000, 100000))}), 413),
        ("bad json", lambda: client.post("/sam/", content=b'{"b64img": ', headers={"Content-Type": "application/json"}), 422),
        ("bad base64", lambda: _qupath_post(client, "/sam/", {"b64img": "@@@", "bbox": [0, 0, 5, 5]}), 400),
        ("base64 of no image", lambda: _qupath_post(client, "/sam/", {"b64img": base64.b64encode(b"abc").decode(), "bbox": [0, 0, 5, 5]}), 415),
        ("bomb in b64", lambda: _qupath_post(client, "/sam/", {"b64img": base64.b64encode(_png_header_claiming(80000, 80000)).decode(), "bbox": [0, 0, 5, 5]}), 413),
        ("box outside", lambda: _qupath_post(client, "/sam/", {"b64img": _png_b64(np.zeros((20, 30, 3), np.uint8)), "bbox": [40, 40, 50, 50]}), 422),
        ("no prompt", lambda: _qupath_post(client, "/sam/", {"b64img": _png_b64(np.zeros((20, 30, 3), np.uint8))}), 422),
        ("point labels", lambda: _qupath_post(client, "/sam/", {"b64img": _png_b64(np.zeros((20, 30, 3), np.uint8)), "point_coords": [[1, 1]], "point_labels": [3]}), 422),
    ]
    for what, call, status in cases:
        reply = call()
        assert reply.status_code == status, (what, reply.status_code, reply.text)
        assert reply.json()["detail"], what
    assert not marker.exists()
    info = _upload(client, DEMO_2D)
    outside = client.post(f"/v1/images/{info['id']}/segment", json={"boxes": [[500, 500, 600, 600]]})
    assert outside.status_code == 422 and "outside the image" in outside.json()["detail"]
    wrong = client.post(f"/v1/images/{info['id']}/segment", json={"boxes": [[1, 2, 3]]})
    assert wrong.status_code == 422 and wrong.json()["detail"] == "boxes: box 0 is 3 numbers; a 2D box is 4 integers"
    assert list(client.app.state.service.store.incoming.iterdir()) == []  # nothing left of the failed uploads


def test_token_upload_limit_and_busy_queue(exports):
    with make_client(exports("seeded"), token="s3cret", max_upload_mb=1, queue_size=1) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/").status_code == 200 and c.get("/app.js").status_code == 200  # the page asks for the token
        assert c.get("/v1/info").status_code == 401 and c.get("/openapi.json").status_code == 401
        assert c.get("/v1/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/sam/weights/", headers={"X-Token": "wrong"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        big = b"\0" * (2 << 20)
        too_large = c.post("/v1/images", files={"file": ("x.npz", big)}, headers=auth)
        assert too_large.status_code == 413 and "at most 1 MiB" in too_large.json()["detail"]

        def chunks():  # no Content-Length: the limit is found while reading
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.npz"\r\n\r\n'
            for _ in range(4):
                yield b"\0" * (1 << 19)
            yield b"\r\n--b--\r\n"

        streamed = c.post("/v1/images", content=chunks(), headers={**auth, "Content-Type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413
        worker = c.app.state.service.worker
        release = threading.Event()
        started = threading.Event()
        worker.submit(lambda: (started.set(), release.wait(30)))  # the worker is busy
        assert started.wait(10)
        worker.submit(lambda: None)  # and the queue (1) is full
        info = _upload_with(c, DEMO_2D, auth)
        busy = c.post(f"/v1/images/{info['id']}/segment", json={}, headers=auth)
        release.set()
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]


def _upload_with(c, path, headers):
    with open(path, "rb") as handle:
        reply = c.post("/v1/images", files={"file": (path.name, handle)}, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_serve_warns_without_a_token_off_loopback(exports, monkeypatch, tmp_path):
    """(uvicorn's Server.run replaced: it returns at once, as when it stops; the temporary store is removed then
    too.)"""
    import tempfile

    import uvicorn

    from .conftest import free_port

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", str(free_port()), "--export-dir",
                                       str(exports("seeded"))])
    assert result.exit_code == 0, result.stderr
    assert "WARNING: listening on 0.0.0.0 without a token" in result.stderr
    quiet = CliRunner().invoke(main, ["serve", "--port", str(free_port()), "--export-dir", str(exports("seeded")),
                                      "--token", "t"])
    assert quiet.exit_code == 0 and "WARNING" not in quiet.stderr
    assert not list(tmp_path.glob("medsam-lite-store-*"))


def test_a_port_in_use_is_said_before_the_engine_loads(exports):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port), "--export-dir", str(exports("seeded"))])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another server "
                                     f"is there: stop it or choose another --port)")  # no "ready ...; serving on" line


def test_a_store_folder_that_cannot_be_made_is_said_before_the_engine_loads(exports, tmp_path):
    (tmp_path / "taken").write_text("a file")
    store = tmp_path / "taken" / "store"
    result = CliRunner().invoke(main, ["serve", "--port", "8799", "--export-dir", str(exports("seeded")), "--store-dir",
                                       str(store)])
    assert result.exit_code == 2  # was a traceback once the engine had loaded
    assert result.stderr.strip() == f"error: the store folder {store} cannot keep uploads: Not a directory"


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field ``file`` -> (body, content type)."""
    return (f'--b\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode() + data
            + b"\r\n--b--\r\n", "multipart/form-data; boundary=b")


def _upload_long_volume(url: str, folder) -> dict:
    """Upload a synthetic 80-slice volume with one box over all of it (a propagation of 80 encoder passes, tens
    of seconds) to the server at ``url``; its stored-image reply."""
    import urllib.request

    volume = np.zeros((80, 64, 64), np.uint8)
    volume[:, 20:44, 20:44] = 200
    case = folder / "3DBox_long.npz"
    np.savez(case, imgs=volume, boxes=np.array([[18, 18, 0, 46, 46, 79]]))
    body, kind = _multipart(case.name, case.read_bytes())
    return json.load(urllib.request.urlopen(urllib.request.Request(url + "/v1/images", data=body,
                                                                   headers={"Content-Type": kind})))


def test_sigterm_cuts_a_long_job_after_the_grace_with_a_503(exports, tmp_path):
    """`docker stop` / a pod's eviction while a propagation runs: the server says it is stopping, answers the cut
    request 503 with Retry-After (was: it waited for the whole job, past docker stop's SIGKILL), and exits."""
    import signal
    import time
    import urllib.error
    import urllib.request

    from .conftest import start_serve

    url, process = start_serve("--export-dir", str(exports("seeded")), "--store-dir", str(tmp_path / "store"),
                               "--shutdown-grace", "1")
    try:
        stored = _upload_long_volume(url, tmp_path)
        reply = {}

        def segment() -> None:
            try:
                urllib.request.urlopen(urllib.request.Request(url + f"/v1/images/{stored['id']}/segment", data=b"{}",
                                                              headers={"Content-Type": "application/json"}), timeout=300)
                reply["status"] = 200
            except urllib.error.HTTPError as exc:
                reply.update(status=exc.code, detail=json.loads(exc.read())["detail"], retry=exc.headers["Retry-After"])

        asking = threading.Thread(target=segment)
        asking.start()
        time.sleep(1.5)  # the job is under way
        process.send_signal(signal.SIGTERM)
        asking.join(120)
        assert reply == {"status": 503, "detail": "the server is stopping; send this again once it is back", "retry": "10"}
        process.wait(60)
        assert "stopping (SIGTERM): the requests under way get up to 1 s" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_a_full_disk_refuses_an_upload_with_507_and_keeps_nothing(exports, tmp_path, monkeypatch, caplog):
    """No space left where the server keeps uploads: while receiving the bytes (written to /dev/full) or while
    storing the decoded image; each gets 507 with a reason and a log line, leaves no partial file, and the same
    upload works once there is room."""
    import medsam_lite.serve.service as service_module
    import medsam_lite.serve.store as store_module

    store = tmp_path / "store"
    real_mkstemp = service_module.tempfile.mkstemp

    def mkstemp_on_full_disk(**options):
        fd, name = real_mkstemp(**options)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name  # every write: ENOSPC

    def save_on_full_disk(path, array):
        Path(path).write_bytes(b"\x93NUMPY" + b"x" * 100)  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with make_client(exports("seeded"), store_dir=store) as c:
        for module, name, full in [(service_module.tempfile, "mkstemp", mkstemp_on_full_disk),
                                   (store_module.np, "save", save_on_full_disk)]:
            monkeypatch.setattr(module, name, full)
            with open(DEMO_2D, "rb") as handle, caplog.at_level("WARNING", "medsam_lite.serve"):
                reply = c.post("/v1/images", files={"file": (DEMO_2D.name, handle)})
            monkeypatch.undo()
            assert reply.status_code == 507, reply.text
            assert reply.json()["detail"] == ("the server has no room to keep this now (no space left on device); "
                                              "delete images it no longer needs, or try again later")
            assert f"POST /v1/images refused: no space left on device where the server keeps its images ({store})" \
                in caplog.text
            assert sorted(p.name for p in store.iterdir()) == [".incoming"] and not any((store / ".incoming").iterdir())
            caplog.clear()
        assert _upload(c, DEMO_2D)["shape"] == [240, 320, 3]  # room again


def test_a_client_that_leaves_stops_its_job(exports, tmp_path):
    """A client that closes its connection while its job runs (a page closed during a propagation, a 3D Slicer
    user who cancels, a QuPath user who gives up on automatic masks, a script killed during /v1/predict): the job
    stops before its next engine pass instead of holding the worker to its end (80 slices, 4096 decoder calls).
    Every kind of long job: the native propagation, a whole case through /v1/predict, FastMedSAM's slice by slice,
    samapi's automatic masks. All but the first ran to their end before (``queue.stopped`` did not count them)."""
    import socket
    import time
    import urllib.request

    from .conftest import start_serve, stop_serve

    url, process = start_serve("--export-dir", str(exports("seeded")), "--store-dir", str(tmp_path / "store"),
                               "--cache-mb", "1024")
    try:
        info = lambda: json.load(urllib.request.urlopen(url + "/v1/info"))  # noqa: E731
        stored = _upload_long_volume(url, tmp_path)
        long_case = (tmp_path / "3DBox_long.npz").read_bytes()
        with np.load(tmp_path / "3DBox_long.npz") as data:
            np.savez(tmp_path / "with_gts.npz", imgs=data["imgs"], gts=(data["imgs"] > 0).astype(np.uint8))
        body, kind = _multipart("3DBox_long.npz", (tmp_path / "with_gts.npz").read_bytes())
        fastmedsam_name = json.load(urllib.request.urlopen(urllib.request.Request(
            url + "/upload/", data=body, headers={"Content-Type": kind})))["filename"]
        png = _png_b64(np.load(DEMO_2D)["imgs"])
        jobs = {"native segment": ("/v1/images/" + stored["id"] + "/segment", b"{}", "application/json"),
                "one-shot predict": ("/v1/predict", *_multipart("3DBox_long.npz", long_case)),
                "FastMedSAM segment": (f"/segment/?filename={fastmedsam_name}", None, None),
                "samapi automask": ("/sam/automask/", json.dumps({"b64img": png, "points_per_side": 64}).encode(),
                                    "application/json")}
        port = int(url.rsplit(":", 1)[1])
        for stopped, (what, (path, data, kind)) in enumerate(jobs.items(), start=1):
            before = info()
            with socket.create_connection(("127.0.0.1", port)) as leaving:
                head = f"{'GET' if data is None else 'POST'} {path} HTTP/1.1\r\nHost: x\r\n"
                if data is not None:
                    head += f"Content-Type: {kind}\r\nContent-Length: {len(data)}\r\n"
                leaving.sendall(head.encode() + b"\r\n" + (data or b""))
                deadline = time.monotonic() + 60
                while info()["queue"]["running"] == 0:  # the job is under way
                    assert time.monotonic() < deadline, f"{what}: the job did not start"
                    time.sleep(0.05)
                time.sleep(1.0)  # a few passes into it
            deadline = time.monotonic() + 120
            while (after := info())["queue"]["done"] == before["queue"]["done"]:
                assert time.monotonic() < deadline, f"{what}: the job did not end"
                time.sleep(0.1)
            assert after["queue"]["stopped"] == stopped and after["queue"]["running"] == 0, (what, after["queue"])
            assert after["cache"]["slices"] - before["cache"]["slices"] < 40, what  # not the 80 slices
    finally:
        stop_serve(process)

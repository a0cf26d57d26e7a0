"""`medsam-lite serve` against odd input a client can send: each gets a 4xx that names the problem (none a 500),
and the odd-but-valid ones are served. In-process (FastAPI's TestClient) on the seeded stand-in export."""
from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pytest

from .test_serve import DEMO_2D, _png_b64, _qupath_post, _segs, _upload, make_client

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def client(exports):
    with make_client(exports("seeded"), cache_mb=64, store_mb=256) as c:
        yield c


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _post_npz(client, name: str, **arrays):
    return client.post("/v1/images", files={"file": (name, _npz(**arrays))})


def _refused(reply, status: int, words: str) -> None:
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert words in reply.json()["detail"], reply.json()["detail"]


def test_boxes_and_slices_a_2d_image_does_not_have(client):
    image_id = _upload(client, DEMO_2D)["id"]
    segment = f"/v1/images/{image_id}/segment"
    _refused(client.post(segment, json={"boxes": [[0, 0, 2**70, 10]]}), 422, "beyond 2**53 is no pixel or slice index")
    _refused(client.post(segment, json={"boxes": [[5, 5, 40, 40]], "slice": 3}), 422, "slice 3: this image is 2D")
    _refused(client.get(f"/v1/images/{image_id}/slice", params={"z": 1}), 422, "slice 1: this image is 2D")
    _refused(client.get(f"/v1/images/{image_id}/pixels", params={"z": 1}), 422, "slice 1: this image is 2D")
    assert client.get(f"/v1/images/{image_id}/slice", params={"z": 0}).status_code == 200
    far = _segs(client.post(segment, json={"boxes": [[5, 5, 10**12, 40]]}))  # a large box is clipped, as predict does
    assert far.shape == np.load(DEMO_2D)["imgs"].shape[:2] and far.any()


def test_npz_uploads_with_broken_side_arrays_are_refused_naming_them(client):
    volume = np.random.default_rng(0).integers(0, 255, (4, 32, 40), dtype=np.uint8)
    box = np.array([[2, 2, 0, 30, 30, 3]])
    for spacing, words in [(np.array([np.nan, 1, 1]), "spacing is [nan, 1.0, 1.0]; expected 3 positive, finite values"),
                           (np.array([1.0, 0.0, 1.0]), "spacing is [1.0, 0.0, 1.0]"),
                           (np.array([1.0, 1.0]), "spacing is [1.0, 1.0]"),
                           (np.array(["a", "b", "c"]), "spacing has dtype <U1; expected numbers")]:
        _refused(_post_npz(client, "3DBox_s.npz", imgs=volume, boxes=box, spacing=spacing), 422, "3DBox_s.npz: " + words)
    labels = np.zeros(volume.shape, np.int16)
    for gts, words in [(labels[:2], "gts is (2, 32, 40) but imgs is (4, 32, 40): images and labels on different grids"),
                       (labels + 0.5, "gts holds non-integer values (float64)"),
                       (labels - 1, "gts holds values -1..-1; labels are 0..65535")]:
        _refused(_post_npz(client, "3DBox_g.npz", imgs=volume, boxes=box, gts=gts), 422, "3DBox_g.npz: " + words)
    rgba = np.zeros((32, 40, 4), np.uint8)  # no 2D/3D in the name: the boxes' width says which was meant
    _refused(_post_npz(client, "rgba.npz", imgs=rgba, boxes=np.array([[1, 1, 20, 20]])), 422,
             "imgs has shape (32, 40, 4); a 2D case needs (H, W, 3)")
    thin = np.zeros((1200, 2, 3), np.uint8)
    _refused(_post_npz(client, "2DBox_thin.npz", imgs=thin, boxes=np.array([[0, 0, 1, 1199]])), 422,
             "2DBox_thin.npz: the image is 1200 x 2 pixels")
    _refused(client.post("/v1/predict", files={"file": ("2DBox_thin.npz", _npz(imgs=thin, boxes=np.array([[0, 0, 1, 9]])))}),
             422, "up to 512:1")
    assert list(client.app.state.service.store.incoming.iterdir()) == []  # nothing left of the refused uploads


def test_npz_side_arrays_that_claim_gigabytes_are_refused_unread(client, tmp_path):
    """A member whose .npy header claims gigabytes (what a few MB of deflated zeros can hold) is refused from its
    header: the server never allocates it."""
    from .test_bad_input import _claiming

    volume = np.zeros((4, 32, 40), np.uint8)
    box = np.array([[2, 2, 0, 30, 30, 3]])
    for key, shape, descr, words in [
            ("gts", (10**4,) * 3, "|u1", "gts is (10000, 10000, 10000) but imgs is (4, 32, 40): images and labels on "
                                         "different grids"),
            ("spacing", (10**9,), "<f8", "spacing has shape (1000000000,); expected 2 or 3 values (mm)"),
            ("boxes", (10**9, 6), "<i8", "boxes has shape (1000000000, 6): more than the 65,535 boxes a label map can "
                                         "hold (uint16); not loaded")]:
        arrays = {"imgs": volume} if key == "boxes" else {"imgs": volume, "boxes": box}
        _claiming(tmp_path / "case.npz", arrays, key, shape, descr)
        upload = ("3DBox_claims.npz", (tmp_path / "case.npz").read_bytes())
        _refused(client.post("/v1/images", files={"file": upload}), 422, words)
        _refused(client.post("/upload/", files={"file": upload}), 422, words)  # FastMedSAM
    assert list(client.app.state.service.store.incoming.iterdir()) == []


def test_a_medical_image_over_max_pixels_is_refused_from_its_header(client, tmp_path):
    """A NIfTI whose header claims 1100^3 voxels (more than --max-pixels, 2**30) with almost no pixel data: 413
    from the header, nothing decoded (the readers' own limit was 2**31 voxels, so a server run with a lower
    --max-pixels decoded such a volume before it refused it)."""
    import struct

    import SimpleITK

    path = tmp_path / "scan.nii"
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(np.zeros((4, 8, 8), np.int16)), str(path))
    header = bytearray(path.read_bytes())
    header[40:56] = struct.pack("<8h", 3, 1100, 1100, 1100, 1, 1, 1, 1)  # NIfTI-1 dim[0..7]
    reply = client.post("/v1/images", files={"file": ("scan.nii", bytes(header))})
    _refused(reply, 413, "scan.nii: the image has 1,331,000,000 voxels (1100, 1100, 1100); more than the 1,073,741,824 "
                         "this reads (--max-pixels)")


def test_a_2d_npz_without_boxes_is_an_image_to_prompt(client):
    with np.load(DEMO_2D) as data:
        image, boxes = data["imgs"], data["boxes"]
    bare = client.post("/v1/images", files={"file": ("2DBox_bare.npz", _npz(imgs=image))})
    assert bare.status_code == 200, bare.text
    assert bare.json()["boxes"] == [] and not bare.json()["is_3d"]
    stored = _upload(client, DEMO_2D)
    asked = {"boxes": boxes.tolist()}
    want = _segs(client.post(f"/v1/images/{stored['id']}/segment", json=asked))
    assert np.array_equal(_segs(client.post(f"/v1/images/{bare.json()['id']}/segment", json=asked)), want)
    _refused(client.post("/v1/predict", files={"file": ("2DBox_bare.npz", _npz(imgs=image))}), 422,
             "missing array(s) boxes")  # predict's contract: a 2D case has boxes


def test_samapi_odd_images_and_parameters(client):
    image = np.load(DEMO_2D)["imgs"]
    plain = _qupath_post(client, "/sam/", {"b64img": _png_b64(image), "bbox": [20, 20, 120, 100]})
    assert plain.status_code == 200, plain.text
    data_url = _qupath_post(client, "/sam/", {"b64img": "data:image/png;base64," + _png_b64(image),
                                              "bbox": [20, 20, 120, 100]})
    assert data_url.status_code == 200 and data_url.text == plain.text  # a browser's canvas.toDataURL() form
    _refused(_qupath_post(client, "/sam/", {"b64img": _png_b64(np.zeros((1100, 2, 3), np.uint8)), "bbox": [0, 0, 1, 50]}),
             422, "the image is 1100 x 2 pixels")
    automask = {"b64img": _png_b64(image[:64, :64]), "points_per_side": 2}
    _refused(_qupath_post(client, "/sam/automask/", {**automask, "crop_n_layers": 1, "crop_overlap_ratio": -0.5}), 422,
             "crop_overlap_ratio")
    nan = client.post("/sam/automask/", content=json.dumps({**automask, "pred_iou_thresh": float("nan")}).encode(),
                      headers={"Content-Type": "application/json"})
    _refused(nan, 422, "pred_iou_thresh: Input should be a finite number")
    import base64

    import cv2

    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    cut = base64.b64encode(jpeg[: len(jpeg) // 2]).decode()  # OpenCV decoded it, the lower half grey
    _refused(_qupath_post(client, "/sam/", {"b64img": cut, "bbox": [20, 20, 120, 100]}), 422,
             "b64img is cut short: the JPEG ends before its end-of-image marker")
    whole = _qupath_post(client, "/sam/", {"b64img": base64.b64encode(jpeg).decode(), "bbox": [20, 20, 120, 100]})
    assert whole.status_code == 200, whole.text


def test_fastmedsam_says_what_is_wrong_with_gts_at_upload(client):
    volume = np.random.default_rng(1).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    reply = client.post("/upload/", files={"file": ("3DBox_f.npz", _npz(imgs=volume, gts=np.ones((2, 8, 8), np.uint8)))})
    _refused(reply, 422, "3DBox_f.npz: gts is (2, 8, 8) but imgs is (3, 32, 32)")
    image = np.load(DEMO_2D)["imgs"]
    gts = np.zeros(image.shape[:2], np.uint8)
    gts[20:60, 30:90] = 1
    reply = client.post("/upload/", files={"file": ("2DBox_f.npz", _npz(imgs=image, gts=gts))})  # no boxes: gts's
    assert reply.status_code == 200, reply.text
    out = client.get("/segment/", params={"filename": reply.json()["filename"]})
    assert out.status_code == 200
    with np.load(io.BytesIO(out.content)) as data:
        assert data["segs"].shape == gts.shape and data["segs"][gts > 0].any()


def test_itk_messages_do_not_show_the_servers_folders(client):
    reply = client.post("/v1/images", files={"file": ("scan.nii.gz", gzip.compress(b"no NIfTI header here"))})
    assert reply.status_code == 422, reply.text
    assert "/" not in reply.json()["detail"].split("cannot read", 1)[1], reply.json()["detail"]

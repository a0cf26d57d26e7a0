"""The viewer protocols of `medsam-lite serve` against their real client code, on a real CT lesion case with the
official weights: nnInteractive's remote client (what 3D Slicer's nnInteractive extension and napari-nninteractive
use), the napari plugin itself under Xvfb, and MONAI Label's MONAILabelClient (3D Slicer's MONAI Label module).
Raw HU arrive (the case's uint8 volume - 1000); the server's CT window (-872.5/255) gives back exactly that uint8
volume, so a box with a z extent must equal the official script's output, and a box on one slice ``segment
--until-empty`` on the same NIfTI. Refusals (no token, no lease, expired lease, full, too large, bad boxes) are
checked in-process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from medsam_lite.cli import main

from .conftest import ROOT, load_reference, shared_case, start_serve, stop_serve

CASE = "3DBox_CT_Lesion_000002_03_01_035-047.npz"
TOKEN = "viewer-test-token"
WINDOW = ["--modality", "CT", "--window-level", "-872.5", "--window-width", "255"]  # HU = uint8 - 1000 -> uint8
SCREENSHOT = ROOT / "docs" / "napari_medsam_lite.png"


def _client(module: str):
    """The real client code, pinned in requirements/test.txt (installed by pip install -e ".[test]")."""
    import importlib

    return importlib.import_module(module)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The case's uint8 volume, its raw HU volume as a NIfTI (spacing from the case), and its box."""
    import SimpleITK as sitk

    data = np.load(shared_case(CASE))
    volume, box = data["imgs"], data["boxes"][0]
    raw = volume.astype(np.int16) - 1000
    folder = tmp_path_factory.mktemp("viewer-case")
    nifti = folder / "lesion.nii.gz"
    image = sitk.GetImageFromArray(raw)
    image.SetSpacing(tuple(float(s) for s in data["spacing"]))
    image.SetOrigin((-12.5, 40.0, 7.0))
    sitk.WriteImage(image, str(nifti))
    np.save(folder / "raw.npy", raw)
    return {"volume": volume, "raw": raw, "box": box, "nifti": nifti, "raw_npy": folder / "raw.npy",
            "spacing": [float(s) for s in data["spacing"]], "z": int((box[5] - box[2]) / 2 + box[2])}


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    """A `medsam-lite serve` on 127.0.0.1 with the official weights, the CT window above and a token."""
    store = tmp_path_factory.mktemp("viewer-store")
    url, process = start_serve("--export-dir", str(exports("official")), "--store-dir", str(store), "--token", TOKEN,
                               *WINDOW)
    yield url
    stop_serve(process)


def _segment_until_empty(case, exports, tmp_path, box_2d, z) -> np.ndarray:
    """`segment --until-empty` on the case's NIfTI with one box drawn on slice z -> (D, H, W) labels."""
    import SimpleITK as sitk

    boxes = tmp_path / "box.json"
    x0, y0, x1, y1 = (int(v) for v in box_2d)
    boxes.write_text(json.dumps([[x0, y0, z, x1, y1, z]]))
    out = tmp_path / "segment"
    result = CliRunner().invoke(main, ["segment", str(case["nifti"]), "-o", str(out), "--boxes", str(boxes),
                                       "--until-empty", "--reach", "40", *WINDOW, "--export-dir", str(exports("official")), "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "lesion.json").read_text())
    assert record["propagation"] == "until-empty" and record["z_mid"] == [z]
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesion.nii.gz")))


def test_nninteractive_client_session_equals_segment(server, case, exports, ov_engines, tmp_path):
    remote = _client("nnInteractive.inference.remote")
    from medsam_lite.pipeline.segment import segment_3d, slice_boxes

    session = remote.nnInteractiveRemoteInferenceSession(server + "/nninteractive", api_key=TOKEN)
    try:
        assert session.supported_interactions["bbox2d"] and not session.supported_interactions["bbox3d"]
        assert session.ping() and session.lease_status()["remaining_seconds"] > 0
        session.set_image(case["raw"][None], {"spacing": case["spacing"][::-1]})
        assert session.original_image_shape == (1, *case["raw"].shape)
        buffer = np.zeros(case["raw"].shape, np.uint8)
        session.set_target_buffer(buffer)
        x0, y0, _, x1, y1, _ = (int(v) for v in case["box"])
        z = case["z"]
        # napari sends floats: the rectangle's corners, rounded by the server as nnInteractive rounds them
        changed = session.add_bbox_interaction([[z, z + 1.0], [y0 - 0.3, y1 + 1.2], [x0 + 0.4, x1 + 0.6]], True)
        expected = _segment_until_empty(case, exports, tmp_path, [x0, y0, x1, y1], z) > 0
        assert expected[z].any() and np.array_equal(buffer > 0, expected)
        assert changed == [[int(i.min()), int(i.max()) + 1] for i in np.nonzero(expected)]
        assert expected.any(axis=(1, 2)).sum() > 1, "the box propagated beyond its slice"

        # a second box elsewhere on another slice adds to the object (the union of its boxes)
        second = np.array([x0 + 60, y0 - 60, x1 + 60, y1 - 60])
        boxes = slice_boxes(second[None], np.array([z - 2]), buffer.shape[0], 40)
        more = segment_3d(ov_engines("official"), case["volume"], boxes, z_middle=np.array([z - 2]), until_empty=True)
        session.add_bbox_interaction([[z - 2, z - 1], [second[1], second[3] + 1], [second[0], second[2] + 1]], True)
        assert more.any() and np.array_equal(buffer > 0, expected | (more > 0))

        session.reset_interactions()
        assert not buffer.any()
        with pytest.raises(Exception, match="400"):
            session.add_point_interaction([z, y0, x0], True)
    finally:
        session.close()


@pytest.mark.slow
def test_napari_plugin_draws_a_box_and_gets_the_mask(server, case, exports, tmp_path):
    """napari-nninteractive in Remote mode under Xvfb; the Labels layer equals segment's; the screenshot is the
    README's (docs/napari_medsam_lite.png)."""
    _client("napari_nninteractive")
    if shutil.which("xvfb-run") is None:
        if os.environ.get("MEDSAM_LITE_REQUIRE_XVFB"):
            pytest.fail("xvfb-run is missing (apt-get install xvfb xauth and the Qt xcb libraries; .ci/run does)")
        pytest.skip("needs xvfb-run (Debian: xvfb, xauth and the Qt xcb libraries)")
    x0, y0, _, x1, y1, _ = (int(v) for v in case["box"])
    z = case["z"]
    labels, png = tmp_path / "labels.npy", tmp_path / "napari.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "NAPARI_CONFIG": str(tmp_path / "napari.yaml"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}
    result = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable,
                             str(ROOT / "tests" / "napari_driver.py"), server + "/nninteractive", TOKEN,
                             str(case["raw_npy"]), str(z), str(y0), str(x0), str(y1), str(x1), str(labels), str(png)],
                            capture_output=True, text=True, encoding="utf-8", errors="replace", env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = _segment_until_empty(case, exports, tmp_path, [x0, y0, x1, y1], z) > 0
    assert np.array_equal(np.load(labels) > 0, expected)
    assert png.stat().st_size > 10_000
    if os.environ.get("MEDSAM_LITE_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, SCREENSHOT)


def test_monailabel_client_roi_equals_the_official_script(server, case, exports, tmp_path):
    client_module = _client("monailabel.client.client")
    import SimpleITK as sitk

    client = client_module.MONAILabelClient(server + "/monailabel", tmpdir=str(tmp_path))
    assert client.auth_enabled()
    with pytest.raises(client_module.MONAILabelClientException):
        client.auth_token("someone", "wrong")
    client.update_auth(client.auth_token("someone", TOKEN))
    info = client.info()
    assert info["models"]["medsam_lite"]["type"] == "deepgrow" and info["models"]["medsam_lite"]["dimension"] == 3
    assert client.upload_image(str(case["nifti"]), "lesion-2") == {"image": "lesion-2"}
    x0, y0, z0, x1, y1, z1 = (int(v) for v in case["box"])
    # Slicer's roi: IJK bounds of the ROI's corners, which come reversed where the image axes are flipped
    path, params = client.infer("medsam_lite", "lesion-2", {"roi": [x1, x0, y0, y1, z1, z0], "label": "lesion"})
    result = sitk.ReadImage(path)
    assert params["label_names"] == {"lesion": 1} and params["prompt"] == "3D box"
    assert np.allclose(result.GetSpacing(), sitk.ReadImage(str(case["nifti"])).GetSpacing())
    assert np.allclose(result.GetOrigin(), (-12.5, 40.0, 7.0))
    assert np.array_equal(sitk.GetArrayFromImage(result), load_reference("official", CASE))

    z = case["z"]
    path, params = client.infer("medsam_lite", "lesion-2", {"roi": [x0, x1, y0, y1, z, z]})
    expected = _segment_until_empty(case, exports, tmp_path, [x0, y0, x1, y1], z)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(path)), expected)
    latencies = params["latencies"]
    assert latencies["slices_cached"] == z1 - z0 + 1, "the 3D box's slices are not encoded again"
    assert latencies["slices_encoded"] + latencies["slices_cached"] >= expected.any(axis=(1, 2)).sum()

    path, params = client.infer("medsam_lite", "lesion-2", {"foreground": [[(x0 + x1) // 2, (y0 + y1) // 2, z]],
                                                           "background": [[x0 - 20, y0 - 20, z]]})
    clicked = sitk.GetArrayFromImage(sitk.ReadImage(path))
    assert params["prompt"] == "points" and clicked[z].any() and not np.delete(clicked, z, axis=0).any()
    with pytest.raises(client_module.MONAILabelClientException, match="404"):
        client.infer("medsam_lite", "never-uploaded", {"roi": [x0, x1, y0, y1, z, z]})


DEMO_3D = ROOT / "test_demo" / "imgs" / "3DBox_Synthetic_ellipsoids.npz"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _packed(array: np.ndarray) -> bytes:
    from nnInteractive.inference.remote.serialization import pack_array  # the client's own packer

    return pack_array(array)


@pytest.fixture(scope="module")
def inproc(exports):
    """The service in-process (seeded weights), with a token, one nnInteractive session, reach 3 and a voxel
    limit of the demo volume's crop below."""
    from .test_serve import make_client

    with make_client(exports("seeded"), token=TOKEN, max_sessions=1, reach=3, max_pixels=12 * 100 * 80) as c:
        yield c


def _demo_crop() -> np.ndarray:
    return np.load(DEMO_3D)["imgs"][:, 20:120, 20:100]  # (12, 100, 80)


def test_nninteractive_protocol_refusals_and_boxes_on_any_axis(inproc, ov_engines, monkeypatch):
    """In-process, seeded weights: every refusal with the protocol's status code, the image kept after a refused
    one, and a box on a sagittal slice (axis 2) equal to segment_3d along that axis."""
    from nnInteractive.inference.remote.serialization import unpack_array

    from medsam_lite.pipeline.segment import segment_3d, slice_boxes

    volume, c = _demo_crop(), inproc
    assert c.get("/nninteractive/healthz").json() == {"ok": True}  # open, like /healthz
    assert c.post("/nninteractive/claim").status_code == 401
    with monkeypatch.context() as without:  # the runtime image has no blosc2: 501 naming the install
        without.setitem(sys.modules, "blosc2", None)
        reply = c.post("/nninteractive/claim", headers=AUTH)
        assert reply.status_code == 501 and "pip install blosc2" in reply.json()["detail"]
    assert c.post("/nninteractive/set_image", headers=AUTH, content=_packed(volume[None])).status_code == 410
    claim = c.post("/nninteractive/claim", headers=AUTH).json()
    assert claim["max_sessions"] == 1 and claim["idle_timeout_seconds"] == 600
    assert c.post("/nninteractive/claim", headers=AUTH).status_code == 503
    lease = {**AUTH, "X-Lease-Token": claim["lease_token"]}
    assert c.post("/nninteractive/heartbeat", headers={**AUTH, "X-Lease-Token": "forged"}).status_code == 410
    reply = c.post("/nninteractive/set_image", headers={**lease, "X-Meta": json.dumps({"image_properties": {}})},
                   content=_packed(volume[None]))
    assert reply.status_code == 200 and reply.json() == {"original_image_shape": [1, 12, 100, 80], "intensity": "raw"}
    larger = np.zeros((1, 13, 100, 80), np.uint8)
    reply = c.post("/nninteractive/set_image", headers=lease, content=_packed(larger))
    assert reply.status_code == 413 and "--max-pixels" in reply.json()["detail"]
    assert c.post("/nninteractive/set_image", headers=lease, content=b"NNIA\x01junk").status_code == 400
    holes = volume[None].astype(np.float32)
    holes[0, 3, 40, 40] = np.nan
    reply = c.post("/nninteractive/set_image", headers=lease, content=_packed(holes))
    assert reply.status_code == 400 and "NaN" in reply.json()["detail"]
    target = {"shape": [12, 100, 80], "dtype": "uint8"}
    assert c.post("/nninteractive/set_target_buffer", headers=lease, json=target).status_code == 200  # image kept
    assert c.post("/nninteractive/set_target_buffer", headers=lease, json={**target, "shape": [1, 2, 3]}).status_code == 400
    refused = {"3D box": [[2, 8], [30, 60], [20, 50]], "outside": [[3, 4], [300, 400], [20, 50]],
               "empty": [[3, 4], [60, 30], [20, 50]], "not three pairs": [[3, 4], [30, 60]]}
    for why, coords in refused.items():
        reply = c.post("/nninteractive/add_bbox_interaction", headers=lease,
                       json={"bbox_coords": coords, "include_interaction": True})
        assert reply.status_code == 400, why
        assert reply.json()["detail"], why
    negative = {"bbox_coords": [[3, 4], [30, 60], [20, 50]], "include_interaction": False}
    assert "negative" in c.post("/nninteractive/add_bbox_interaction", headers=lease, json=negative).json()["detail"]
    assert c.post("/nninteractive/add_point_interaction", headers=lease,
                  json={"coordinates": [3, 40, 40], "include_interaction": True}).status_code == 400
    assert c.post("/nninteractive/add_bbox_interaction", headers=lease, content=b"{not json").status_code == 400

    xc = 40
    reply = c.post("/nninteractive/add_bbox_interaction", headers=lease,
                   json={"bbox_coords": [[2, 10], [20, 70], [xc, xc + 1]], "include_interaction": True})
    assert reply.status_code == 200, reply.text
    meta = json.loads(reply.headers["X-Meta"])
    buffer = np.zeros(volume.shape, np.uint8)
    region = tuple(slice(lo, hi) for lo, hi in meta["bbox"])
    buffer[region] = unpack_array(reply.content)
    turned = np.moveaxis(volume, 2, 0)
    boxes = slice_boxes(np.array([[20, 2, 69, 9]]), np.array([xc]), turned.shape[0], 3)
    expected = np.moveaxis(segment_3d(ov_engines("seeded"), turned, boxes, z_middle=np.array([xc]),
                                      until_empty=True), 0, 2) > 0
    assert meta["ran_prediction"] and expected[:, :, xc].any()
    assert np.array_equal(buffer > 0, expected) and not expected[:, :, : xc - 3].any()
    present = expected.any(axis=(0, 1))

    def visited(slices) -> int:  # a sweep encodes each slice it reaches, up to and including the first empty one
        count = 0
        for k in slices:
            count += 1
            if not present[k]:
                break
        return count

    up, down = range(xc, min(xc + 3, volume.shape[2] - 1) + 1), range(xc - 1, max(xc - 3, 0) - 1, -1)
    assert int(reply.headers["X-Slices-Encoded"]) == visited(up) + (visited(down) if present[xc] else 0)
    again = c.post("/nninteractive/add_bbox_interaction", headers=lease,
                   json={"bbox_coords": [[2, 10], [20, 70], [xc, xc + 1]], "include_interaction": True})
    assert again.headers["X-Slices-Encoded"] == "0" and int(again.headers["X-Slices-Cached"]) > 0
    assert json.loads(again.headers["X-Meta"]) == {"ran_prediction": True, "bbox": None}  # nothing new
    assert c.post("/nninteractive/release", headers=lease).json() == {"released": True}
    assert c.post("/nninteractive/claim", headers=AUTH).status_code == 200  # the slot is free again

    assert c.post("/nninteractive/release", headers=lease).json() == {"released": True}  # idempotent


def test_leases_expire_when_idle_or_silent():
    from medsam_lite.serve.nni_sessions import SessionRegistry
    from medsam_lite.serve.uploads import UploadError

    registry = SessionRegistry(max_sessions=2, idle_seconds=0.3, liveness_seconds=0.15)
    idle, silent = registry.claim(), registry.claim()
    for _ in range(3):  # heartbeats keep the first one alive, but not active
        time.sleep(0.08)
        registry.get(idle.token, active=False)
    with pytest.raises(UploadError) as gone:
        registry.get(silent.token)  # no request at all for longer than the liveness timeout
    assert gone.value.status == 410 and len(registry) == 1
    time.sleep(0.1)
    with pytest.raises(UploadError) as gone:
        registry.get(idle.token)  # heartbeats only, for longer than the idle timeout
    assert gone.value.status == 410 and len(registry) == 0


def test_monailabel_refusals(inproc, tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "demo.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(_demo_crop().astype(np.int16) * 4), str(path))
    c = inproc
    assert c.get("/monailabel/auth/").json()["enabled"] is True  # asked before the user gives a token
    assert c.get("/monailabel/info/").status_code == 401
    assert c.post("/monailabel/auth/token", data={"username": "a", "password": "no"}).status_code == 401
    with path.open("rb") as handle:
        reply = c.put("/monailabel/datastore/?image=demo", headers=AUTH, files={"file": ("demo.nii.gz", handle)})
    assert reply.json() == {"image": "demo"}
    assert c.get("/monailabel/datastore/", headers=AUTH).json()["total"] == 1
    infer = "/monailabel/infer/medsam_lite?image=demo&output=json"
    assert c.post("/monailabel/infer/other_model?image=demo", headers=AUTH).status_code == 404
    assert c.post("/monailabel/infer/medsam_lite?image=nothing", headers=AUTH).status_code == 404
    for params in ("{bad", json.dumps({"roi": [1, 2, 3]}), json.dumps({}),
                   json.dumps({"foreground": [[5, 5, 99]]}), json.dumps({"roi": [900, 990, 5, 50, 3, 3]}),
                   json.dumps({"roi": [5, 60, 5, 50, 3, 3], "foreground": "x"}), "[1, 2]", "null",
                   json.dumps({"roi": [5, 1e300, 5, 50, 3, 3]}), json.dumps({"foreground": [[1e30, 5, 3]]})):
        reply = c.post(infer, headers=AUTH, data={"params": params})
        assert reply.status_code == 422 and reply.json()["detail"], params
    assert "params must be a JSON object" in c.post(infer, headers=AUTH, data={"params": "[1, 2]"}).json()["detail"]
    assert "no voxel index: [[1e+30, 5.0, 3.0]]" in c.post(infer, headers=AUTH, data={"params": json.dumps(
        {"foreground": [[1e30, 5, 3]]})}).json()["detail"]
    reply = c.post(infer, headers=AUTH, data={"params": json.dumps({"roi": [15, 60, 10, 70, 5, 5]})})
    assert reply.status_code == 200 and reply.json()["prompt"].startswith("box on one slice")
    assert reply.json()["latencies"]["slices_encoded"] >= 1

"""Per-request timings of the viewer protocols, through their real clients, against a `medsam-lite serve` this
script starts on 127.0.0.1 and stops: nnInteractive's remote client (3D Slicer's nnInteractive extension, napari)
and MONAI Label's client (3D Slicer's MONAI Label module), on shared 3D cases with raw HU (uint8 - 1000, the
server's CT window gives the uint8 back). Per case: set_image / upload, the first box on the new volume (every slice
it reaches is encoded), the same box again and a box on a neighbouring slice (embeddings cached), and MONAI Label's
3D ROI (the case's own box) and a ROI on one slice.

    python benchmarks/bench_viewers.py --export-dir ~/.cache/medsam-lite/exports/<sha16> [--fixtures ../shared]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CASES = ["3DBox_CT_Lesion_000002_03_01_035-047.npz", "3DBox_CT_AMOS_amos_0018.npz"]
WINDOW = ["--modality", "CT", "--window-level", "-872.5", "--window-width", "255"]


def cpu_description() -> str:
    """benchmarks/bench_stages.py's CPU name and instruction sets."""
    spec = importlib.util.spec_from_file_location("bench_stages", Path(__file__).with_name("bench_stages.py"))
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    return f"{stages.cpu_name()}, {os.cpu_count()} cores ({stages.cpu_features()})"


def start(export: Path, store: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "medsam_lite", "serve", "--port", str(port), "--export-dir",
                                str(export), "--store-dir", str(store), *WINDOW], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return process
        except OSError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit("the server did not start")


def timed(rows: list, case: str, protocol: str, what: str, call):
    start_time = time.perf_counter()
    result = call()
    rows.append((case, protocol, what, time.perf_counter() - start_time))
    return result


def run_case(url: str, path: Path, folder: Path, rows: list) -> None:
    import SimpleITK as sitk
    from monailabel.client import MONAILabelClient
    from nnInteractive.inference.remote import nnInteractiveRemoteInferenceSession

    data = np.load(path)
    raw, (x0, y0, z0, x1, y1, z1) = data["imgs"].astype(np.int16) - 1000, (int(v) for v in data["boxes"][0])
    name, z = path.stem[:28], (z0 + z1) // 2
    session = nnInteractiveRemoteInferenceSession(url + "/nninteractive")
    try:
        timed(rows, name, "nnInteractive", f"set_image {raw.shape}", lambda: session.set_image(raw[None]))
        buffer = np.zeros(raw.shape, np.uint8)
        session.set_target_buffer(buffer)
        box = [[z, z + 1], [y0, y1 + 1], [x0, x1 + 1]]
        timed(rows, name, "nnInteractive", "first box (new volume)", lambda: session.add_bbox_interaction(box, True))
        timed(rows, name, "nnInteractive", "same box again", lambda: session.add_bbox_interaction(box, True))
        box[0] = [z + 1, z + 2]
        timed(rows, name, "nnInteractive", "box on the next slice", lambda: session.add_bbox_interaction(box, True))
    finally:
        session.close()
    image = sitk.GetImageFromArray(raw)
    image.SetSpacing(tuple(float(s) for s in data["spacing"]))
    nifti = folder / f"{name}.nii.gz"
    sitk.WriteImage(image, str(nifti))
    client = MONAILabelClient(url + "/monailabel", tmpdir=str(folder))
    timed(rows, name, "MONAI Label", "upload (NIfTI)", lambda: client.upload_image(str(nifti), name))
    timed(rows, name, "MONAI Label", "3D ROI (case box)",
          lambda: client.infer("medsam_lite", name, {"roi": [x0, x1, y0, y1, z0, z1]}))
    timed(rows, name, "MONAI Label", "ROI on one slice",
          lambda: client.infer("medsam_lite", name, {"roi": [x0, x1, y0, y1, z, z]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export-dir", type=Path, required=True, help="OpenVINO export of the official weights")
    parser.add_argument("--fixtures", type=Path, default=Path(os.environ.get("MEDSAM_LITE_FIXTURES", "../shared")))
    parser.add_argument("--port", type=int, default=8771)
    args = parser.parse_args()
    rows: list = []
    with tempfile.TemporaryDirectory(prefix="bench-viewers-") as folder:
        process = start(args.export_dir, Path(folder) / "store", args.port)
        try:
            for case in CASES:
                run_case(f"http://127.0.0.1:{args.port}", args.fixtures / "cases" / "imgs" / case, Path(folder), rows)
        finally:
            process.terminate()
            process.wait(30)
    print(f"CPU: {cpu_description()}; engine: OpenVINO fp32 ({args.export_dir}); client and server on one machine")
    print("| case | protocol | request | seconds |\n|---|---|---|---:|")
    for case, protocol, what, seconds in rows:
        print(f"| {case} | {protocol} | {what} | {seconds:.2f} |")


if __name__ == "__main__":
    main()

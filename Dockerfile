# nitrogen-server: the NitroGen policy behind ZeroMQ (5555) and newline-JSON TCP (5556).
#
# Base: the official slim Python image, not an nvidia/cuda one. torch's PyPI wheels for Linux
# carry the whole CUDA user space (cuda-toolkit, cuDNN, NCCL as pip packages); the only thing the
# container needs from the host is the driver, which the NVIDIA Container Toolkit mounts in. A CUDA
# runtime base would ship those libraries twice (gigabytes) for nothing. Any Debian-like image with
# python3 (3.11+: the dependency step reads pyproject.toml with tomllib) and the venv module works;
# CI builds on a debootstrapped bookworm stand-in because it cannot pull images.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# The torch to install. The default is the CUDA build on PyPI of the version the test suite runs
# (2.13.0 on PyPI is built for CUDA 13: NVIDIA driver 580 or newer). CI passes 2.13.0+cpu, the
# local CPU wheel, instead of downloading gigabytes of CUDA libraries.
ARG TORCH_VERSION=2.13.0
# Where pip finds packages. Empty: PyPI only. pip reads these names from the environment, so a
# build behind a mirror, or CI pointing at its local wheels, passes them as build args.
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_FIND_LINKS=""
ARG PIP_TRUSTED_HOST=""
ARG PIP_CERT=""
# The user the server runs as. 1000 owns ./models on most single-user hosts, so the bind-mounted
# weights directory is writable for the first-start download without a chown.
ARG APP_UID=1000
ARG APP_GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/sh", "-eu", "-c"]

RUN groupadd --gid "${APP_GID}" nitrogen \
 && useradd --uid "${APP_UID}" --gid "${APP_GID}" --create-home --shell /usr/sbin/nologin nitrogen \
 && python3 -m venv /opt/venv

# Dependencies first, from the pyproject.toml files alone: a code change below reuses these layers.
# torch goes in on its own so the pin above wins over the loose `torch>=...` in pyproject. The client
# package (clients/python) is the server's too: its overlay draws the live view and `render`'s video.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}"
WORKDIR /app
COPY pyproject.toml ./
COPY clients/python/pyproject.toml ./clients/python/
RUN python3 -c "import tomllib; print('\n'.join(d for f in ('pyproject.toml', 'clients/python/pyproject.toml') \
      for d in tomllib.load(open(f, 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself (no dependency resolution: they are all above).
COPY README.md LICENSE ./
COPY nitrogen ./nitrogen
COPY server ./server
COPY clients/python ./clients/python
RUN pip install --no-cache-dir --no-deps . ./clients/python \
 && rm -rf build ./*.egg-info clients \
 && mkdir -p /app/models \
 && chown "${APP_UID}:${APP_GID}" /app/models

# Configuration: every CLI option has a NITROGEN_* variable; `docker run IMAGE --flag` also works.
# HF_HOME in /tmp: writable by whatever uid compose runs us as (the weights go to /app/models).
ENV NITROGEN_CHECKPOINT=/app/models/ng.pt \
    NITROGEN_HOST=0.0.0.0 \
    NITROGEN_ZMQ_PORT=5555 \
    NITROGEN_TCP_PORT=5556 \
    HF_HOME=/tmp/huggingface

VOLUME ["/app/models"]
# 5557: the live view and /metrics, when --http-port / NITROGEN_HTTP_PORT is set (the compose files do).
EXPOSE 5555 5556 5557
USER ${APP_UID}:${APP_GID}

# The first start may download ng.pt: the start period covers that before failures count.
HEALTHCHECK --interval=15s --timeout=15s --start-period=15m --retries=3 \
    CMD ["nitrogen-server", "healthcheck"]

# Exec form: the server is PID 1 and gets the SIGTERM of `docker stop`, finishes in-flight
# requests and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nitrogen-server"]
CMD []

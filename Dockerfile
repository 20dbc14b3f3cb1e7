# syntax=docker/dockerfile:1
# rpcgate's image: the package installed as a wheel on a slim Python, run as uid 10001.
#
#   docker build -t rpcgate .
#   docker run -p 8545:8545 rpcgate                                      # the mainnet default
#   docker run -p 8545:8545 -v $PWD/my.yaml:/etc/rpcgate/config.yaml:ro --env-file .env rpcgate
#
# The install steps are CI's (scripts/test: `pip install .` from this source tree), split in
# two: the build stage turns the tree into wheels, the runtime stage installs those wheels
# and nothing else (no compiler, no build tools, no source). tests/test_deploy_files.py runs
# the same pip commands.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rpcgate ./rpcgate
# rpcgate's wheel and one of every dependency (uvloop, orjson, aiohttp, ... for this platform).
RUN python -m pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
# The wheels are mounted for the install only: none of them stays in a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
      --no-index --find-links /wheels rpcgate
RUN groupadd --system --gid 10001 rpcgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin rpcgate
# The default config; mount yours over it, or point RPCGATE_CONFIG elsewhere.
COPY deploy/config.yaml /etc/rpcgate/config.yaml
ENV RPCGATE_CONFIG=/etc/rpcgate/config.yaml \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8545
# Liveness: the process answers. No curl in a slim image; Python is there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8545/healthz', timeout=2)"]
# rpcgate drains on SIGTERM: /readyz turns 503, then calls in flight finish.
STOPSIGNAL SIGTERM
CMD ["rpcgate", "serve"]

LABEL org.opencontainers.image.title="rpcgate" \
      org.opencontainers.image.description="A drop-in JSON-RPC gateway for EVM chains over many upstreams, with failover" \
      org.opencontainers.image.licenses="Apache-2.0"

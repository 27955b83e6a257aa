# syntax=docker/dockerfile:1
# One image for the four services; the Deployment picks the service by its module:
#   python -m services.vote_ingest.main | services.antifraud.main | services.tally.main
#   | services.lottery.main
# Build: docker build --build-arg BUILD_VERSION=<version> -t votes:<version> .
#   (BUILD_VERSION is the version label of the services' build_info metric)

ARG PYTHON_IMAGE=python:3.11-slim-trixie

# --- build: resolve and install the project into a self-contained virtualenv ---------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/votes
# Dependencies first, from the pinned list in pyproject.toml, so a code-only change
# reuses this layer.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/votes/bin/pip install --no-cache-dir --requirement /tmp/requirements.txt
COPY shared ./shared
COPY services ./services
RUN /opt/votes/bin/pip install --no-cache-dir --no-deps . \
    && /opt/votes/bin/python -m pip uninstall --yes --quiet pip \
    && /opt/votes/bin/python -m compileall -q /opt/votes/lib

# --- runtime: the virtualenv on a slim base; no compiler, no pip, no source tree -------
FROM ${PYTHON_IMAGE} AS runtime
ARG BUILD_VERSION=dev
LABEL org.opencontainers.image.title="votes" \
      org.opencontainers.image.description="Public online voting: ingest, antifraud, tally, lottery" \
      org.opencontainers.image.version="${BUILD_VERSION}"
# Bytecode is compiled at build time: the root filesystem is read-only at run time.
ENV PATH=/opt/votes/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    VOTES_ENV=production \
    HTTP_HOST=0.0.0.0 \
    BUILD_VERSION=${BUILD_VERSION}
# pip and setuptools are not needed at run time; removing them shrinks the attack surface.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 votes \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin votes
COPY --from=build /opt/votes /opt/votes
WORKDIR /opt/votes
USER 10001:10001
EXPOSE 8081 8082 8083 8084
ENTRYPOINT ["python", "-m"]
CMD ["services.vote_ingest.main"]

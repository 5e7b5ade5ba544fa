# syntax=docker/dockerfile:1
# The one Berth image: the operator (`berth operator`), the registries' token servers
# (`berth auth-server`) and the prune jobs (`berth prune`) all run from it.
#
#   docker build -t ghcr.io/berth-dev/berth:0.1.0 .
#
# The base is pinned to an exact Python and Debian release; pin its digest too where you
# build (`docker buildx imagetools inspect python:3.11.16-slim-trixie`).

FROM python:3.11.16-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Wheels of Berth and of everything it needs; the final stage installs exactly those.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.16-slim-trixie
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl \
 && useradd --uid 1000 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin berth
# A numeric non-root user, so that `runAsNonRoot` can be verified; group 0, so that the
# arbitrary UID OpenShift assigns (always in group 0) is the same kind of user. The
# registries' token servers and prune jobs run as 1000 outside OpenShift too.
USER 1000:0
WORKDIR /tmp
ENTRYPOINT ["berth"]
CMD ["operator", "--all-namespaces", "--standalone"]

# syntax=docker/dockerfile:1
#
# The cleo-operator image. One image for both processes: the operator (`cleo-operator run`,
# the chart's Deployment) and the backup runner (`cleo-operator backup run ...`, in the pods
# of each CleoBackup's CronJob), so what backs up is always the version that reconciles.
#
#   docker build -t cleo-operator:dev .                                  (make image)
#   docker build --build-arg DEBIAN_RELEASE=trixie --build-arg PG_MAJOR=17 -t ... .
#
# The second form is for PostgreSQL servers newer than 15: pg_dump refuses a server of a
# newer major version than itself, and each Debian release ships one PostgreSQL major.
#
# Python dependencies are pinned by constraints.txt (the exact versions the test suite
# ran with); the final stage gets the virtualenv only, without pip, compilers or sources.

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=bookworm

# ---- build: a virtualenv with the pinned dependencies and the package --------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/cleo
WORKDIR /src
# Dependencies first, in a layer of their own: they change less often than the code.
COPY constraints.txt ./
RUN /opt/cleo/bin/pip install --only-binary=:all: -r constraints.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
# --no-deps: everything it needs is installed above, at the pinned versions; `pip check`
# fails the build if pyproject.toml and constraints.txt disagree.
RUN /opt/cleo/bin/pip install --no-deps . \
 && /opt/cleo/bin/pip check \
 && /opt/cleo/bin/pip uninstall --yes pip

# ---- the image ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE}
ARG PG_MAJOR=15
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cleo-operator" \
      org.opencontainers.image.description="Kubernetes operator for CleoAI tenants, backups and failover" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# pg_dump and pg_restore for the backup runner (no server); then no pip in the image either.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends "postgresql-client-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 cleo \
 && useradd --system --uid 10001 --gid cleo --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin cleo
COPY --from=build /opt/cleo /opt/cleo
# The versioned client directory first: Debian's /usr/bin/pg_dump is a wrapper that needs
# a cluster configuration this image does not have.
ENV PATH="/opt/cleo/bin:/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes can verify runAsNonRoot; the chart runs as this user too.
USER 10001:10001
ENTRYPOINT ["cleo-operator"]
CMD ["run"]

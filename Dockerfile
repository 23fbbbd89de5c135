# syntax=docker/dockerfile:1
#
# worker: DynamoDB Streams -> sinks, through KCL 3 (Java) + multilang (Python).
#   docker build -t worker --build-arg VERSION=$(git describe --always) --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run -v "$PWD/config:/app/config:ro" worker                   (configuration file)
#   docker run -e WORKER_CONFIG= -e WORKER__WORKER__TABLE=Orders -e AWS_REGION=eu-west-1 worker   (environment only)
# Stage 1 builds the KCL launcher (launcher/); stage 2 installs the Python package: its
# dependencies first, pinned by .ci/constraints.txt (the pins .ci/dev tests with), then the code;
# the runtime stage is slim Python 3.11 (the tests' minor version) + a Temurin JRE + the
# launcher's jars in /opt/kcl/lib, with tini as PID 1.

ARG MAVEN_IMAGE=maven:3.9-eclipse-temurin-17
ARG JRE_IMAGE=eclipse-temurin:17-jre
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- 1. the Java launcher and every KCL / adapter / AWS SDK jar it needs -------------------
FROM ${MAVEN_IMAGE} AS launcher
WORKDIR /build
COPY launcher/pom.xml ./pom.xml
COPY launcher/src ./src
RUN --mount=type=cache,target=/root/.m2 \
    mvn -B -q -DskipTests package \
 && mkdir -p /out/lib \
 && cp target/worker-kcl-launcher.jar target/lib/*.jar /out/lib/

# --- 2. the Python package in a virtualenv ------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# 2a. amazon-kclpy: only its Python modules are used (the launcher's jars from stage 1 run KCL).
# Its wheel build downloads KCL 3.5.3 jars from Maven Central and fails wherever one is missing,
# so it is installed from its sdist without that step, exactly as .ci/dev does (keep the two in step).
# An editable install is not byte-compiled, and the runtime sets PYTHONDONTWRITEBYTECODE: compiled
# here, once, or every shard process compiles these modules at start (about 10 ms of CPU each time).
ARG KCLPY_VERSION=3.2.0
RUN pip download --no-deps --no-binary :all: "amazon-kclpy==${KCLPY_VERSION}" -d /opt/venv/src \
 && tar -xzf "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}.tar.gz" -C /opt/venv/src \
 && pip install -e "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}" \
 && python -m compileall -q "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}/amazon_kclpy"
# 2b. the other dependencies, in their own layer: a code change does not reinstall them.
COPY pyproject.toml ./
COPY .ci/constraints.txt ./.ci/constraints.txt
RUN pip install -c .ci/constraints.txt $(python -c "import tomllib; \
print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")
# 2c. the code, on top of the pinned dependencies.
COPY README.md LICENSE ./
COPY worker ./worker
RUN pip install --no-deps -c .ci/constraints.txt .
# 2d. the hot modules compiled by mypyc in place (worker.compiled.MODULES: decoders, diff, sinks;
# 13-20% less CPU per record; .ci/compile.py, as .ci/dev setup builds them): a C compiler and a
# throw-away mypyc environment in this stage only, the extension modules in /opt/venv. Run from /
# so that `worker` is the installed package, not /src/worker; the check fails the build if it
# would not use them.
COPY .ci/compile.py ./.ci/compile.py
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/mypyc \
 && /opt/mypyc/bin/pip install -c .ci/constraints.txt mypy \
 && cd / \
 && python /src/.ci/compile.py "$(python -c 'import os, worker; print(os.path.dirname(worker.__file__))')" --mypyc /opt/mypyc/bin/mypyc \
 && python -c "import worker.compiled as c; assert c.ACTIVE, 'the compiled modules are not in use'"

# --- 3. runtime ---------------------------------------------------------------------------
FROM ${JRE_IMAGE} AS jre
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="worker" \
      org.opencontainers.image.description="DynamoDB Streams to aggregates, OpenSearch and an S3 archive, with an exactly-once effect (KCL 3)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# tini as PID 1: reaps orphans and forwards SIGTERM to `worker daemon` (which forwards it to java).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/opt/java/openjdk
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
COPY --from=launcher /out/lib /opt/kcl/lib
COPY --from=python-build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:/opt/java/openjdk/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    WORKER_CONFIG=/app/config/worker.toml \
    WORKER__WORKER__DATA_DIR=/app/data \
    WORKER_KCL_CLASSPATH_DIR=/opt/kcl/lib \
    WORKER_KCL_MAIN_CLASS=worker.kcl.StreamsMultiLangLauncher

# The base image ships its standard library without .pyc files (it deletes them), and the worker
# user can write neither /usr/local nor, with PYTHONDONTWRITEBYTECODE, any cache: compiled here,
# once (about 15 MB), or every shard process compiles the ~200 standard modules it imports at each
# start (about 0.75 s of CPU, measured on the development machine).
RUN python -m compileall -q -x '/(test|tests|idle_test|site-packages)/' "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"

RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --home-dir /app --no-create-home --shell /usr/sbin/nologin worker \
 && mkdir -p /app/config /app/data \
 && chown -R worker:worker /app \
 && java -version \
 && test -f /opt/kcl/lib/worker-kcl-launcher.jar
WORKDIR /app
USER 10001:10001
EXPOSE 9400

# The port: [kcl] http_port is the one setting (default 9400). Change it in the container with
# WORKER__KCL__HTTP_PORT, which this check reads too (a port set only in the file needs the same
# variable here). No curl in the image: python's urllib.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WORKER__KCL__HTTP_PORT') or '9400'; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4).read()"]

# `worker daemon` renders the KCL properties file and runs
#   java -cp "$WORKER_KCL_CLASSPATH_DIR/*" "$WORKER_KCL_MAIN_CLASS" <file.properties>
# SIGTERM must reach java (graceful KCL shutdown); allow time for it: docker stop -t 60 / stop_grace_period.
# Configuration from the environment alone: WORKER_CONFIG= (empty) and WORKER__SECTION__KEY variables.
ENTRYPOINT ["/usr/bin/tini", "--", "worker", "daemon"]

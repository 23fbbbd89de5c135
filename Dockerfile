# syntax=docker/dockerfile:1
#
# worker: DynamoDB Streams -> sinks, through KCL 3 (Java) + multilang (Python).
#   docker build -t worker .
#   docker run --init -v "$PWD/config:/app/config:ro" worker
# Stage 1 builds the KCL launcher (launcher/); stage 2 installs the Python package;
# the runtime stage is slim Python + a Temurin JRE + the launcher's jars in /opt/kcl/lib.

ARG MAVEN_IMAGE=maven:3.9-eclipse-temurin-17
ARG JRE_IMAGE=eclipse-temurin:17-jre
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

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
COPY pyproject.toml README* ./
COPY worker ./worker
# amazon-kclpy: only its Python modules are used (the launcher's jars from stage 1 run KCL). Its
# wheel build downloads KCL 3.5.3 jars from Maven Central and fails wherever one is missing, so it
# is installed from its sdist without that step, exactly as .ci/dev does (keep the two in step).
ARG KCLPY_VERSION=3.2.0
RUN pip download --no-deps --no-binary :all: "amazon-kclpy==${KCLPY_VERSION}" -d /opt/venv/src \
 && tar -xzf "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}.tar.gz" -C /opt/venv/src \
 && pip install -e "/opt/venv/src/amazon_kclpy-${KCLPY_VERSION}" \
 && pip install .

# --- 3. runtime ---------------------------------------------------------------------------
FROM ${JRE_IMAGE} AS jre
FROM ${PYTHON_IMAGE}
ENV JAVA_HOME=/opt/java/openjdk
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
COPY --from=launcher /out/lib /opt/kcl/lib
COPY --from=python-build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:/opt/java/openjdk/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    WORKER_CONFIG=/app/config/worker.toml \
    WORKER_KCL_CLASSPATH_DIR=/opt/kcl/lib \
    WORKER_KCL_MAIN_CLASS=worker.kcl.StreamsMultiLangLauncher \
    WORKER_HTTP_PORT=9400

RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --home-dir /app --no-create-home --shell /usr/sbin/nologin worker \
 && mkdir -p /app/config /app/data \
 && chown -R worker:worker /app \
 && java -version \
 && test -f /opt/kcl/lib/worker-kcl-launcher.jar
WORKDIR /app
USER 10001:10001
EXPOSE 9400

# No curl in the image: python's urllib. WORKER_HTTP_PORT must match [kcl] http_port
# (WORKER__KCL__HTTP_PORT) if either is changed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WORKER_HTTP_PORT') or os.environ.get('WORKER__KCL__HTTP_PORT') or '9400'; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4).read()"]

# `worker daemon` renders the KCL properties file and runs
#   java -cp "$WORKER_KCL_CLASSPATH_DIR/*" "$WORKER_KCL_MAIN_CLASS" <file.properties>
# SIGTERM must reach java (graceful KCL shutdown); allow time for it: docker stop -t 60 / stop_grace_period.
ENTRYPOINT ["worker", "daemon"]

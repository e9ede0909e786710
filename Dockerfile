# The production image: the package installed from a wheel (no source tree in the image), the production
# instance configuration in $DAGSTER_HOME, and one command per ECS service (see deploy/README.md).
# openverse_dataset_tests/test_wheel_install.py runs the same steps without Docker (CI cannot run Docker).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY openverse_dataset ./openverse_dataset
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
ENV DAGSTER_HOME=/opt/dagster/home \
    OPENVERSE_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 openverse \
 && mkdir -p /opt/dagster/home /opt/dagster/app /data \
 && chown openverse /opt/dagster/home /data
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
COPY deploy/dagster.yaml /opt/dagster/home/dagster.yaml
COPY deploy/workspace.yaml /opt/dagster/app/workspace.yaml
COPY workspace.yaml /opt/dagster/app/workspace-local.yaml
WORKDIR /opt/dagster/app
# Fail the image build when the installed package's code location does not load (ephemeral instance: the
# production instance needs DAGSTER_PG_URL, which only the running tasks have).
RUN env -u DAGSTER_HOME dagster definitions validate -w workspace-local.yaml \
 && openverse-dataset --version
USER openverse
EXPOSE 3000 4000
# The code server; the webserver runs `dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml` and the daemon
# `dagster-daemon run -w workspace.yaml` from this same image.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "openverse_dataset.definitions", "-a", "defs", "--location-name", "openverse_dataset"]

# One image for every taskbroker process; compose.yaml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY taskbroker ./taskbroker
COPY api ./api
COPY scheduler_worker ./scheduler_worker
COPY runtimes ./runtimes
COPY timeout_daemon ./timeout_daemon
COPY schedule_firer ./schedule_firer
RUN pip install '.[kubernetes]' && useradd --system --uid 10001 taskbroker
USER taskbroker
ENTRYPOINT ["taskbroker"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]

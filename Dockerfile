FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md schema.sql ./
COPY api ./api
COPY dispatcher ./dispatcher
COPY hookpost ./hookpost
COPY ui ./ui
# Editable install keeps schema.sql beside the packages, where `hookpost migrate` reads it.
RUN pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 hookpost
USER hookpost

ENV HOOKPOST_HOST=0.0.0.0 \
    HOOKPOST_PORT=8080 \
    HOOKPOST_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["hookpost"]
CMD ["serve"]

# The production image: gunicorn serves the app, whitenoise its static files; the same image
# runs the Celery worker and beat (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PULLBOARD_VAR_DIR=/var/lib/pullboard

WORKDIR /app
COPY requirements.lock .
RUN pip install --no-cache-dir uv==0.13.9 \
    && uv pip install --system --no-cache --require-hashes -r requirements.lock

COPY . .
RUN useradd --system --home-dir /app pullboard \
    && install -d -o pullboard /var/lib/pullboard \
    && SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0
USER pullboard

EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]

# One image for the three processes (web, worker, beat); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app

# Runtime dependencies only (requirements-dev.txt is for tests and linting). psycopg2-binary ships
# wheels, so no compiler or libpq headers are needed.
COPY requirements.txt ./
RUN pip install -r requirements.txt

RUN groupadd --system app && useradd --system --gid app --home-dir /app --no-create-home app

COPY . .

# Static files are collected into the image (var/static) and served by whitenoise. The key is a
# throwaway: collectstatic needs settings to load, nothing is signed.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p var/celery \
    && chown -R app:app var

USER app

EXPOSE 8000

CMD ["gunicorn", "-c", "gunicorn.conf.py", "core.wsgi:application"]

"""Pullboard settings: one module, every deployment difference read from the environment.

The defaults give a zero-setup install (SQLite in WAL mode, Celery's filesystem broker);
production points DATABASE_URL at PostgreSQL and CELERY_BROKER_URL at Redis.
"""

import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PULLBOARD_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY", "")
    if key:
        return key
    # Zero-setup installs get a random key kept out of the repository, so sessions survive a
    # restart; several web processes on different machines must share SECRET_KEY instead.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
CSRF_FAILURE_VIEW = "config.errors.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "guardian",
    "ninja",  # serves the API docs' scripts from our static files instead of a CDN
    "accounts",
    "checklists",
    "board",
]

MIDDLEWARE = [
    "config.health.HealthzMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "accounts.middleware.UserTimeZoneMiddleware",
    "config.errors.ApiMethodNotAllowedMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'pullboard.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the busy timeout
        # instead of failing with "database is locked" when one upgrades a read lock.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so a Celery worker started by a test sees the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-pullboard.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Parameters bound by the server, and every statement run twice on a connection prepared
    # (psycopg keeps the last 100): a request's statements are the same each time, and
    # planning them anew cost PostgreSQL more than running them (bench/claims.py, over
    # HTTP). Django's default binds on the client, and a client-bound query is not prepared.
    # Behind a pooler in transaction mode, prepared statements need PgBouncer 1.21 or later
    # (max_prepared_statements).
    DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 2}
else:
    raise ImproperlyConfigured("DATABASE_URL must name a sqlite:// or postgres:// database")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Accounts -------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
GUARDIAN_RENDER_403 = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "board:board"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Time -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env_str(
            "STATICFILES_BACKEND",
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage",
        )
    },
}

# --- HTTPS (on behind a TLS-terminating proxy in production) -------------------------------
HTTPS = env_bool("PULLBOARD_HTTPS", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Pullboard ------------------------------------------------------------------------------
DEFAULT_TEAM_SLUG = env_str("DEFAULT_TEAM_SLUG", "ops")
DEFAULT_LEASE = timedelta(minutes=env_int("DEFAULT_LEASE_MINUTES", 15, minimum=1))
DEFAULT_MAX_ATTEMPTS = env_int("DEFAULT_MAX_ATTEMPTS", 3, minimum=1)
WIP_LIMIT = env_int("WIP_LIMIT", 2, minimum=1)
LEASE_SWEEP_SECONDS = env_int("LEASE_SWEEP_SECONDS", 30, minimum=1)
# A claim lapsed this long is taken back at claim time when its timer and the sweep have
# not run (the broker or the worker down), so the board never freezes.
LEASE_GRACE = timedelta(seconds=env_int("LEASE_GRACE_SECONDS", 120, minimum=0))
# Claims the sweep expires per transaction: bounded, so a long backlog never holds locks long.
SWEEP_BATCH_SIZE = env_int("SWEEP_BATCH_SIZE", 5000, minimum=1)
# Lease timers of claims ending within this many seconds share one message (board/timers.py).
TIMER_BUCKET_SECONDS = env_int("TIMER_BUCKET_SECONDS", 1, minimum=1)
# A repeated request is answered from its stored first outcome for at least this long; a day
# is the floor so a client retrying the next morning still gets the first outcome.
IDEMPOTENCY_KEY_RETENTION_HOURS = env_int("IDEMPOTENCY_KEY_RETENTION_HOURS", 48, minimum=24)

# --- Email (a push notifies its assignee) ---------------------------------------------------
# Console in development: the messages are printed by the web process. Production sets an
# SMTP backend and its EMAIL_HOST/EMAIL_PORT/EMAIL_HOST_USER/EMAIL_HOST_PASSWORD.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "pullboard@localhost")
# Where links in emails point: the address staff open Pullboard at.
PULLBOARD_BASE_URL = env_str("PULLBOARD_BASE_URL", "http://localhost:8000").rstrip("/")

# The longest a claim can be held: a run's lease cap (max_lease) is at most 30 days
# (checklists/parsing.py, SETTING_MAXIMUMS).
LONGEST_LEASE = timedelta(days=30)

# --- Celery ---------------------------------------------------------------------------------
CELERY_FILESYSTEM_FOLDER = Path(env_str("CELERY_FILESYSTEM_FOLDER", str(VAR_DIR / "celery")))
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded broker needs no server. It loses a held ETA task when the worker is killed,
    # which is why the periodic sweep exists.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FILESYSTEM_FOLDER / "queue"),
        "data_folder_out": str(CELERY_FILESYSTEM_FOLDER / "queue"),
        "control_folder": str(CELERY_FILESYSTEM_FOLDER / "control"),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis hands a task that a worker has taken but not acknowledged to another worker
        # after the visibility timeout. A lease timer waits in its worker until the lease
        # ends, so a timeout shorter than the longest lease would deliver it again and again
        # (each copy finds nothing to do, but they pile up). Longer than the longest lease,
        # a timer held by a worker that died comes back only after it: the sweep has expired
        # that claim long before.
        "visibility_timeout": env_int(
            "CELERY_VISIBILITY_TIMEOUT", int(LONGEST_LEASE.total_seconds()) + 3600,
            minimum=60,
        ),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "sweep-expired-leases": {
        "task": "board.tasks.sweep_expired_leases",
        "schedule": float(LEASE_SWEEP_SECONDS),
    },
    "purge-idempotency-keys": {
        "task": "board.tasks.purge_idempotency_keys",
        "schedule": 3600.0,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

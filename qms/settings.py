"""Celltrace settings, read from environment variables.

Embedded defaults (no variables set): SQLite in ``var/``, Celery eager, no MQTT.
Real services are selected by ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``MQTT_URL``.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="celltrace-dev-insecure-key-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    # Celltrace, in dependency order (lower layers first).
    "django_celery_beat",
    "qms",
    "qms.ingest",
    "qms.mqtt",
    "qms.opcua",
    "qms.sparkplug",
    "qms.files",
    "genealogy",
    "spc",
    "inspection",
    "formation",
    "risk",
    "compliance",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "qms.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "qms.wsgi.application"

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'celltrace.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the simulated line write while pages read.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Uploaded and generated files: vision evidence (defect crops, frames), reports.
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders, so no collectstatic step is needed to run.
WHITENOISE_USE_FINDERS = True
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "compliance:trace"
LOGOUT_REDIRECT_URL = "login"

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "qms.api.authentication.IntegrationTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["qms.api.permissions.ScopedAccess"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "qms.api.pagination.DefaultCursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "qms.api.exceptions.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Celltrace QMS API",
    "DESCRIPTION": (
        "Cell-level digital thread, trace and recall scope, holds and the station interlock "
        "for lithium-ion cell, module and pack plants."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "InspectionVerdictEnum": "inspection.choices.Verdict",
        "ReviewVerdictEnum": "inspection.choices.ReviewVerdict",
    },
}

# --- Celery -------------------------------------------------------------------------------
# Without a broker, tasks run eagerly in-process; the in-memory transport keeps Celery from
# looking for a broker on localhost.
QMS_CELERY_BROKER_CONFIGURED = bool(env.str("CELERY_BROKER_URL", default=""))
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or "memory://localhost/"
CELERY_TASK_ALWAYS_EAGER = not QMS_CELERY_BROKER_CONFIGURED
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env.str(
    "CELERY_RESULT_BACKEND", default=CELERY_BROKER_URL if QMS_CELERY_BROKER_CONFIGURED else None
)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_DEFAULT_QUEUE = "default"

# Shift starts (UTC hours) for the shift ingest summary; keep the beat crontab in step.
QMS_SHIFT_START_HOURS_UTC = tuple(
    env.list("QMS_SHIFT_START_HOURS_UTC", cast=int, default=[6, 14, 22])
)
# Who gets the scheduled reports by e-mail (comma-separated); empty: logged only.
QMS_REPORT_RECIPIENTS = env.list("QMS_REPORT_RECIPIENTS", default=[])
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="celltrace@localhost")
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

# How long the ingest retries a message that names a unit not there yet (the message that
# makes it may be late or on another worker), in seconds; then it waits in the dead-letter
# store for a person.
QMS_INGEST_RETRY_WINDOW_S = env.int("QMS_INGEST_RETRY_WINDOW_S", default=600)

# Largest file the REST upload of the file import takes.
QMS_FILE_IMPORT_MAX_BYTES = env.int("QMS_FILE_IMPORT_MAX_BYTES", default=64 * 1024 * 1024)

# Who may scrape /metrics without logging in (besides integration tokens): CIDR list.
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])

# Where registered vision and risk model files are kept (copied there when registered).
QMS_MODEL_STORE = env.path("QMS_MODEL_STORE", default=VAR_DIR / "models")
# Largest image (frame or crop, encoded) the inspection path accepts, in bytes.
QMS_VISION_MAX_IMAGE_BYTES = env.int("QMS_VISION_MAX_IMAGE_BYTES", default=6 * 1024 * 1024)

# --- MQTT (used by the ingest transports) -------------------------------------------------
MQTT_URL = env.str("MQTT_URL", default="")

# --- Celltrace ----------------------------------------------------------------------------
# Tests and the demo fail instead of skipping when a configured service is missing.
QMS_REQUIRE_SERVICES = env.bool("QMS_REQUIRE_SERVICES", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
    "loggers": {"celltrace": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

VAR_DIR.mkdir(exist_ok=True)
STATIC_ROOT.mkdir(exist_ok=True)

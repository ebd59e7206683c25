"""Typed settings, read once at the edge (prefix ``GRIDGOV_``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDGOV_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/PostGIS to use; when unset the project's own local cluster runs.",
    )
    database_read_url: str | None = Field(
        default=None,
        description="The role the server reads through (SELECT on the published views "
        "only); default: the reader role of the local cluster in development, required "
        "with GRIDGOV_DATABASE_URL in production unless replicas are configured.",
    )
    database_owner_url: str | None = Field(
        default=None,
        description="The owner role for migrations, seeding and the CLI; default "
        "GRIDGOV_DATABASE_URL (the server itself never connects as the owner outside "
        "development).",
    )
    data_dir: Path = Field(default=Path(".data"), description="Local cluster and files.")
    pg_port: int = Field(default=54320, ge=1024, le=65535)
    pg_bindir: Path = Path("/usr/lib/postgresql/15/bin")
    database_name: str = "gridgov"
    database_role: str = "gridgov"
    public_url: str | None = Field(
        default=None, description="Base URL clients see (links); default http://HOST:PORT."
    )
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=8, ge=1)
    pool_timeout: float = Field(
        default=5.0, gt=0, le=120,
        description="Seconds a request waits for a pooled connection (and to connect).")
    seed: int = 2023
    surface_model: Path | None = Field(
        default=None,
        description="DSM GeoTIFF (metres, in the grid's Gauss-Krüger zone) for line-of-sight "
        "coverage; default <data_dir>/dsm.tif, written with the demo town.",
    )

    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs links and tokens; in development a generated one is kept in "
        "<data_dir>/secret_key (mode 0600); required (32+ characters) in production.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed by CORS (comma-separated or JSON list); none: CORS off.",
    )
    statement_timeout_ms: int = Field(
        default=5000, ge=100, le=600_000,
        description="Longest statement a request may run (reads and writes) before it is "
        "cancelled with a 504 problem.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Largest request body accepted (413 beyond); routes may accept less.")
    database_replica_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Streaming replicas for reads (comma-separated or JSON list).",
    )
    debug_headers: bool = Field(
        default=False,
        description="Add Gridgov-Read-Replica (pg_is_in_recovery of the read pool) to "
        "/readyz; refused in production.",
    )
    log_json: bool = Field(default=True, description="One JSON line per request and log "
                           "record on stderr.")
    pages_require_link: bool = Field(
        default=False, description="Phone pages of micro-grids and high points, and /screen, "
        "open only with a signed link (event pages always need one, or a grid worker's "
        "session).")
    link_hours: float = Field(default=72.0, gt=0, le=24 * 90, description="How long the "
                              "link in a dispatch text message stays valid (hours).")
    login_token_days: float = Field(default=30.0, gt=0, le=366, description="How long a "
                                    "bearer token from POST /api/v1/login stays valid (days).")
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="How long a "
                                 "sign-in on a phone page lasts (the session cookie).")
    screen_refresh_seconds: int = Field(default=30, ge=2, le=3600, description="How often "
                                        "/screen fetches /screen/data.json.")
    intake_limit: int = Field(
        default=30, ge=1, description="Public intake: reports per client (IP address for "
        "anonymous reporters, account for residents) per window.")
    intake_window_s: int = Field(default=600, ge=1, description="Public intake window.")
    photos_dir_override: Path | None = Field(
        default=None, alias="GRIDGOV_PHOTOS_DIR",
        description="Where event photos are stored; default <data_dir>/photos.")
    max_bbox_km2: float = Field(
        default=1_000_000.0, gt=0,
        description="Largest ground area (km²) an OGC items bbox may cover (400 beyond); "
        "a province, far more than any view of a town or district in QGIS.")

    imagery_inbox_override: Path | None = Field(
        default=None, alias="GRIDGOV_IMAGERY_INBOX",
        description="The only directory the detect-changes process reads orthophotos and "
        "DSMs from (uploads land in its uploads/); default <data_dir>/inbox.")
    imagery_upload_max_bytes: int = Field(
        default=4 * 1024**3, ge=1024,
        description="Largest GeoTIFF accepted by POST /api/v1/imagery/uploads (413 "
        "beyond); inline base64 inputs stay under GRIDGOV_MAX_BODY_BYTES.")
    changes_workers: int | None = Field(
        default=None, ge=1, description="Threads of one detect-changes job (default: every "
        "core).")

    @property
    def imagery_inbox(self) -> Path:
        return self.imagery_inbox_override or self.data_dir / "inbox"

    @property
    def photos_dir(self) -> Path:
        return self.photos_dir_override or self.data_dir / "photos"

    @property
    def imagery_dir(self) -> Path:
        """Where registered imagery (orthophotos, change masks) is kept as COGs."""
        return self.data_dir / "imagery"

    @property
    def dsm_path(self) -> Path:
        return self.surface_model or self.data_dir / "dsm.tif"

    @field_validator("database_url", "database_read_url", "database_owner_url")
    @classmethod
    def _pg_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://",
                                               "postgresql+psycopg://")):
            raise ValueError("database URLs must be postgresql:// URLs")
        return v

    @field_validator("cors_origins", "database_replica_urls", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str) and not v.lstrip().startswith("["):
            return [item.strip() for item in v.split(",") if item.strip()]
        return v

    @field_validator("database_replica_urls")
    @classmethod
    def _replica_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            cls._pg_url(url)
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
                raise ValueError(f"CORS origin {origin!r} is not an http(s) origin")
        return v


# Passwords and keys that are nobody's secret: shipped in examples, guessed first.
DEFAULT_SECRETS = frozenset({"", "postgres", "gridgov", "password", "secret", "changeme",
                             "change-me", "admin", "x", "test", "dev", "development"})
SECRET_FILE = "secret_key"


class InsecureSettings(ValueError):
    """Settings that must not run outside development (default secrets, debug headers)."""


def check_production(settings: Settings) -> None:
    """Refuse default secrets and debug switches when ``env`` is production."""
    if settings.env != "production":
        return
    faults = []
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if len(key) < 32 or key.lower() in DEFAULT_SECRETS:
        faults.append("GRIDGOV_SECRET_KEY must be set to a random value of 32+ characters")
    urls = [u for u in (settings.database_url, settings.database_read_url,
                        settings.database_owner_url) if u] + list(settings.database_replica_urls)
    if not settings.database_url:
        faults.append("GRIDGOV_DATABASE_URL must be set (the local cluster is for development)")
    if not settings.database_read_url and not settings.database_replica_urls:
        faults.append("GRIDGOV_DATABASE_READ_URL (the reader role) or "
                      "GRIDGOV_DATABASE_REPLICA_URLS must be set")
    for url in urls:
        password = urlsplit(url).password
        if password is None or password.lower() in DEFAULT_SECRETS or len(password) < 12:
            faults.append(f"database password of {url.rsplit('@', 1)[-1]} is missing, a "
                          "default or shorter than 12 characters")
    if settings.debug_headers:
        faults.append("GRIDGOV_DEBUG_HEADERS must be off")
    if "*" in settings.cors_origins:
        faults.append("GRIDGOV_CORS_ORIGINS must name origins, not '*'")
    if faults:
        raise InsecureSettings("refusing to start with GRIDGOV_ENV=production: "
                               + "; ".join(faults))


def secret_key(settings: Settings) -> str:
    """The configured key; outside production, one generated once into the data directory
    (mode 0600) so that links keep working across restarts."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    check_production(settings)
    path = settings.data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key

"""Typed settings, read once at the edge (prefix ``GRIDGOV_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDGOV_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/PostGIS to use; when unset the project's own local cluster runs.",
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
    seed: int = 2023
    surface_model: Path | None = Field(
        default=None,
        description="DSM GeoTIFF (metres, in the grid's Gauss-Krüger zone) for line-of-sight "
        "coverage; default <data_dir>/dsm.tif, written with the demo town.",
    )

    intake_limit: int = Field(
        default=30, ge=1, description="Public intake: reports per client (IP address for "
        "anonymous reporters, account for residents) per window.")
    intake_window_s: int = Field(default=600, ge=1, description="Public intake window.")
    photos_dir_override: Path | None = Field(
        default=None, alias="GRIDGOV_PHOTOS_DIR",
        description="Where event photos are stored; default <data_dir>/photos.")

    @property
    def photos_dir(self) -> Path:
        return self.photos_dir_override or self.data_dir / "photos"

    @property
    def dsm_path(self) -> Path:
        return self.surface_model or self.data_dir / "dsm.tif"

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://",
                                               "postgresql+psycopg://")):
            raise ValueError("GRIDGOV_DATABASE_URL must be a postgresql:// URL")
        return v

"""The one settings class. Built once in ``__main__`` (or by a test) and passed down."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.crypto import parse_keys

_TELEGRAM_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_API_VERSION = re.compile(r"^v\d+\.\d+$")


class ConfigError(Exception):
    """A setting is present but unusable; the message is one line naming it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    database_url: str = "sqlite+aiosqlite:///./pagedesk.db"
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    secret_key: SecretStr | None = None
    bot_admins: str = ""

    fb_app_secret: SecretStr | None = None
    fb_verify_token: SecretStr | None = None
    fb_access_token: SecretStr | None = None
    fb_graph_url: str = "https://graph.facebook.com"
    fb_api_version: str = "v26.0"
    fb_app_id: str | None = None
    fb_login_url: str = "https://www.facebook.com"

    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_secret: SecretStr | None = None

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    rate_telegram_group_per_min: float = Field(default=20, gt=0)
    rate_telegram_global_per_sec: float = Field(default=30, gt=0)
    rate_slack_channel_per_sec: float = Field(default=1, gt=0)
    rate_fb_page_per_min: float = Field(default=30, gt=0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator(
        "public_url",
        "secret_key",
        "fb_app_id",
        "fb_app_secret",
        "fb_verify_token",
        "fb_access_token",
        "telegram_bot_token",
        "telegram_webhook_secret",
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # `FOO=` in a .env means "off", the same as not writing the line at all.
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return v

    @field_validator(
        "public_url", "fb_graph_url", "fb_login_url", "telegram_api_url", "slack_api_url"
    )
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http(s) URL")
        return v

    @field_validator("fb_api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _API_VERSION.match(v):
            raise ValueError("must look like v26.0")
        return v

    @field_validator("fb_app_id")
    @classmethod
    def _app_id(cls, v: str | None) -> str | None:
        if v is not None and not v.strip().isdigit():
            raise ValueError("must be the app's numeric App ID (App settings → Basic)")
        return v.strip() if v is not None else None

    @field_validator("telegram_bot_token")
    @classmethod
    def _tg_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _TELEGRAM_TOKEN.match(v.get_secret_value()):
            raise ValueError("must look like 123456:ABC-DEF (the token BotFather gives)")
        return v

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _tg_secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not _WEBHOOK_SECRET.match(v.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return v

    @field_validator("secret_key")
    @classmethod
    def _secret_keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not parse_keys(v.get_secret_value()):
            raise ValueError("holds no key: one key, or several separated by commas")
        return v

    @field_validator("bot_admins")
    @classmethod
    def _admins(cls, v: str) -> str:
        for item in filter(None, (p.strip() for p in v.split(","))):
            platform, _, uid = item.partition(":")
            if platform not in ("telegram", "slack") or not uid:
                raise ValueError(f"{item!r} must be telegram:<user id> or slack:<user id>")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        if (self.slack_bot_token is None) != (self.slack_signing_secret is None) and (
            self.slack_app_token is None
        ):
            raise ValueError(
                "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET: set both to enable Slack over HTTP"
            )
        return self

    # --- derived -------------------------------------------------------------------------

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_bot_token is not None

    @property
    def telegram_webhook_mode(self) -> bool:
        return self.public_url is not None and self.telegram_webhook_secret is not None

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def facebook_enabled(self) -> bool:
        return self.fb_app_secret is not None

    def admin_ids(self, platform: str) -> frozenset[str]:
        out = set()
        for item in filter(None, (p.strip() for p in self.bot_admins.split(","))):
            p, _, uid = item.partition(":")
            if p == platform:
                out.add(uid)
        return frozenset(out)


def load_settings(**overrides: object) -> Settings:
    """Build settings; an unusable value becomes a ConfigError with one line naming it."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        name = loc[0].upper() if loc else "configuration"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {msg}") from None

"""Settings of ``callrouter serve``: a YAML file, then the environment (CALLROUTER_*).

Secrets (the ARI password, the AMI secret) are ``SecretStr`` so they never print;
each may also come from a file (``CALLROUTER_ARI_PASSWORD_FILE``), as container
secrets do.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from callrouter.domain.identifiers import NodeName

DEFAULT_DB = "sqlite:///./callrouter.db"
DEFAULT_RULES = "./rules.yaml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLROUTER_", extra="forbid", validate_default=True
    )

    db: str = DEFAULT_DB
    rules: Path = Path(DEFAULT_RULES)

    ari_url: str = "http://127.0.0.1:8088"
    ari_user: str = "callrouter"
    ari_password: SecretStr | None = None
    ari_password_file: Path | None = None
    ari_app: str = Field(default="callrouter", pattern=r"^[A-Za-z0-9_.-]+$")

    ami_host: str = "127.0.0.1"
    ami_port: int = Field(default=5038, ge=1, le=65535)
    ami_user: str = "callrouter"
    ami_secret: SecretStr | None = None
    ami_secret_file: Path | None = None

    # FastAGI server for the dialplan's feature codes (workplace login by phone).
    agi_enabled: bool = True
    agi_host: str = "127.0.0.1"
    agi_port: int = Field(default=4573, ge=0, le=65535)
    # Any local process can connect to the FastAGI port, so a session is served only
    # when ARI confirms its channel (a live call running AGI), and the room is split
    # (see AgiServer): verified sessions, i.e. real calls, at once ...
    agi_max_sessions: int = Field(default=256, ge=1, le=10_000)
    # ... and connections not verified yet, in all and per peer address.  A new
    # connection takes the slot of a refused, silent or stalled one, so a flood cannot
    # starve real calls; the per-address cap keeps one address from taking all of it.
    # Under a flood of forged sessions the room must exceed what a few turns of the
    # event loop accept (16 a turn) plus the checks in flight: 32 was measured too
    # small, 128 enough (README).
    agi_max_unverified: int = Field(default=256, ge=1, le=10_000)
    agi_max_unverified_per_source: int = Field(default=128, ge=1, le=10_000)
    # Asterisk sends the whole AGI environment at once; a peer that does not (seconds)
    # is dropped.
    agi_environment_timeout: float = Field(default=2.0, gt=0, le=60)
    # What a workplace phone dials to log in (prefix + extension [+ # + PIN]) or,
    # alone, to log out.  The dialplan's pattern must match it (dialplan/callrouter.conf).
    login_prefix: str = Field(default="*44", pattern=r"^[*#]?[0-9]{1,6}$")
    # The user's own forwardings from their phone: prefix + kind digit (1 always,
    # 2 busy, 3 no answer, 4 unreachable, 5 do not disturb) + target sets one, prefix
    # + kind digit alone clears it, prefix + 0 clears them all.
    forward_prefix: str = Field(default="*7", pattern=r"^[*#]?[0-9]{1,6}$")
    # The user's own switches (rules: switch:): prefix + N (the user's N-th switch)
    # toggles it; + 0 turns it off, + 1 on.
    switch_prefix: str = Field(default="*5", pattern=r"^[*#]?[0-9]{1,6}$")
    # Pickup for a person: prefix + extension answers whichever of their phones rings.
    pickup_prefix: str = Field(default="*8", pattern=r"^[*#]?[0-9]{1,6}$")
    # Logging in at an occupied workplace: move the user there out, or refuse.
    occupied_workplace: Literal["displace", "refuse"] = "displace"
    # The zone of rules' auto_logout times (an IANA name); None: the machine's zone.
    timezone: str | None = None
    # How often logins are checked against their workplace's auto_logout (seconds).
    auto_logout_interval: float = Field(default=30.0, gt=0, le=3600)

    # A client app that has not sent its status for this long counts as offline (s).
    client_heartbeat_timeout: float = Field(default=90.0, gt=0, le=86400)

    # HTTP API for client apps and admins.
    api_enabled: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8090, ge=0, le=65535)
    # Bearer token that may do everything (log anyone in or out); None: no admin access.
    api_admin_token: SecretStr | None = None
    api_admin_token_file: Path | None = None
    # Key that signs users' tokens.  Give every router sharing a directory the same
    # key so that a token from one works on all; None: a random key per start.
    api_token_secret: SecretStr | None = None
    api_token_secret_file: Path | None = None
    api_token_ttl: float = Field(default=12 * 3600, gt=0, le=30 * 86400)
    # Reverse proxies in front of the API (IP addresses or CIDR networks): only from
    # these are X-Forwarded-For/Forwarded believed.  Empty: the TCP peer is the client.
    # In the environment comma-separated: CALLROUTER_API_TRUSTED_PROXIES=10.0.0.5,::1
    api_trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []
    # The web client's session cookie only over HTTPS (set it behind a TLS proxy).
    api_cookie_secure: bool = False

    # Several Asterisks on one directory: the node (the directory's ``nodes``) whose
    # Asterisk this router serves; it dials only the phones of its node and those
    # without one.  None: one Asterisk, every phone is dialled.
    node: NodeName | None = None
    # How often the shared directory is checked for changes made elsewhere (seconds).
    directory_poll_interval: float = Field(default=0.5, gt=0, le=60)
    # When the database cannot be reached the router routes by its snapshot; it counts
    # as ready (health/ready, callrouter status) for this long after the snapshot was
    # last confirmed current (seconds).
    snapshot_max_age: float = Field(default=60.0, gt=0, le=86400)
    # On SIGTERM: how long ringing calls may go on before they are handed back.
    shutdown_grace: float = Field(default=20.0, ge=0, le=3600)
    # Overload (calls/overload.py, README "Overload"): a new call goes straight to the
    # dialplan's AstDB fallback while one of these is reached: calls waiting for their
    # first leg's request to be answered, the event loop's lag (s), the smoothed ARI
    # round trip (s).  Routing resumes once all three stayed below half their limit
    # for overload_recover seconds.  Far above normal operation (README says by how
    # much): they only act when calls would wait for the router.
    overload_max_pending: int = Field(default=128, gt=0, le=100_000)
    overload_max_loop_lag: float = Field(default=0.25, gt=0, le=60)
    overload_max_ari_latency: float = Field(default=0.5, gt=0, le=60)
    overload_recover: float = Field(default=1.0, gt=0, le=3600)

    # Active and standby routers of one Asterisk (README "Active and standby"): the
    # routers sharing this name (default: ari_app@host:port of ari_url) elect one that
    # runs the Stasis app, through the PostgreSQL directory; how often the active one
    # confirms its lease (seconds).
    lease_name: str | None = Field(default=None, min_length=1, max_length=200)
    lease_check_interval: float = Field(default=0.5, gt=0, le=60)

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("ari_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("ari_url must start with http:// or https://")
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError("put the ARI credentials in ari_user/ari_password, not the URL")
        return value.rstrip("/")

    @field_validator("api_trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        networks: list[Any] = []
        for item in value:
            if not isinstance(item, str):
                networks.append(item)
                continue
            try:
                networks.append(ip_network(item.strip()))
            except ValueError as exc:
                raise ValueError(
                    f"{item.strip()!r} is not an IP address or network "
                    f"(e.g. 10.0.0.5, 10.0.0.0/24): {exc}"
                ) from None
        return networks

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Settings:
        for name in ("ari_password", "ami_secret", "api_admin_token", "api_token_secret"):
            path: Path | None = getattr(self, f"{name}_file")
            if getattr(self, name) is None and path is not None:
                try:
                    value = path.read_text().strip()
                except OSError as exc:
                    raise ValueError(f"{name}_file {path}: {exc.strerror}") from None
                if name.startswith("api_") and len(value) < 16:
                    raise ValueError(f"{name}_file {path}: must hold at least 16 characters")
                object.__setattr__(self, name, SecretStr(value))
        return self

    @model_validator(mode="after")
    def _feature_codes_apart(self) -> Settings:
        # One code may not start another: *4 would swallow every *44 login.
        prefixes = [
            (name, getattr(self, name))
            for name in ("login_prefix", "forward_prefix", "switch_prefix", "pickup_prefix")
        ]
        for name, prefix in prefixes:
            for other, other_prefix in prefixes:
                if name != other and other_prefix.startswith(prefix):
                    raise ValueError(
                        f"{name} {prefix!r} starts {other} {other_prefix!r}: a phone dialling "
                        f"{other_prefix} would reach the {name.removesuffix('_prefix')} code"
                    )
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}, e.g. Europe/Berlin") from None
        return value

    @field_validator("api_admin_token", "api_token_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    def require_secrets(self) -> None:
        missing = [
            env
            for name, env in (
                ("ari_password", "CALLROUTER_ARI_PASSWORD"),
                ("ami_secret", "CALLROUTER_AMI_SECRET"),
            )
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(f"{' and '.join(missing)} not set (or the matching *_FILE variable)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Later sources lose: command line, then environment, then the YAML file.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (YAML, keys as in Settings), overridden by the
    environment, overridden by explicit command-line values."""
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        if not config_file.is_file():
            raise ValueError(f"config file {config_file} does not exist")
        settings_cls = type(
            "FileSettings",
            (Settings,),
            {"model_config": {**Settings.model_config, "yaml_file": config_file}},
        )
    return settings_cls(**{k: v for k, v in overrides.items() if v is not None})

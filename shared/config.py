"""Configuration shared by the node and the worker: one strict model, three sources.

Values come from a TOML file, then ``ISPLITEE_*`` environment variables, then command-line
flags, each overriding the one before (systemd units set the environment, a user tries a flag).
Every model forbids unknown keys, so a typo is an error that names the key instead of a
setting silently left at its default; :func:`load_config` turns pydantic's errors into one
line naming each bad key with what was wrong. Environment values are never JSON-decoded by the
settings library (it raised a traceback for ``ISPLITEE_MODELS=models/a.isplitee``): a
list-valued key takes comma-separated values there, or a JSON list (:func:`split_list`).
"""

from __future__ import annotations

import contextvars
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from shared.errors import IsplitEEError
from shared.mqtt import BrokerAddress
from shared.protocol import validate_id

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "MqttSettings",
    "load_config",
    "render_example",
    "split_list",
]

ENV_PREFIX = "ISPLITEE_"

_FILE_DATA: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "isplitee_config_file", default=None
)


class ConfigError(IsplitEEError):
    """A configuration that cannot be used; the message names each bad key and the fix."""


def split_list(value: Any) -> Any:
    """A list-valued key from the environment: ``a,b`` or ``["a", "b"]``; lists pass as given
    (from the file or the flags)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a JSON list; or give comma-separated values"
            ) from None
        if not isinstance(parsed, list):
            raise ValueError(f"{text!r} should be a list")
        return parsed
    return [part.strip() for part in text.split(",") if part.strip()]


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's table, the lowest-priority source."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ does the work
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class MqttSettings(BaseSettings):
    """Broker connection and topic prefix, the same for a node and a worker."""

    model_config = SettingsConfigDict(
        extra="forbid",
        env_prefix=ENV_PREFIX,
        validate_default=True,
        frozen=True,
        allow_inf_nan=False,  # no key means anything by inf or nan: refused by --check-config
        enable_decoding=False,  # list values from the environment: split_list
    )

    broker: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker URL: mqtt://host:port, or mqtts://host:port for TLS.",
    )
    prefix: str = Field("isplitee", description="First level of every topic.")
    username: str | None = Field(None, description="Broker user name (or in the URL).")
    password: SecretStr | None = Field(
        None, description="Broker password; prefer ISPLITEE_PASSWORD over the file. Never logged."
    )
    ca_file: Path | None = Field(
        None,
        description="CA certificate (PEM) to verify a TLS broker; setting it turns TLS on, "
        "even for an mqtt:// URL.",
    )

    @field_validator("username", "ca_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``ISPLITEE_CA_FILE=`` (or ``ca_file = ""``) means none: not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        BrokerAddress.parse(value)
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return validate_id(value, "topic prefix")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password else None


class ProgramSettings(MqttSettings):
    """What a node and a worker both set besides the broker: how their half of the network
    runs (the node's edge half, the worker's cloud half) and where they serve metrics."""

    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for this program's half of the network (default: ONNX "
        "Runtime's choice, one per core).",
    )
    backend: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto",
        description="What runs this program's half of the network: auto = ONNX Runtime (on an "
        "artefact always; on a checkpoint when installed and within 1e-4 of PyTorch, several "
        "times faster at these sizes, else PyTorch). torch needs a checkpoint.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where halves exported from a checkpoint are cached (default: systemd's "
        "$CACHE_DIRECTORY/onnx, else $XDG_CACHE_HOME/isplitee/onnx or ~/.cache/isplitee/onnx).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Prometheus /metrics and /healthz on this port (0: any free port).",
    )
    metrics_host: str = Field("0.0.0.0", description="Address the metrics server binds.")

    def cache_dir_path(self) -> Path:
        from shared.runtime import default_cache_dir

        return self.cache_dir if self.cache_dir is not None else default_cache_dir()


S = TypeVar("S", bound=MqttSettings)


def _describe(errors: list[dict[str, Any]]) -> str:
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? see the example config in deploy/)"
        elif err["type"] == "missing":
            msg = "required: set it in the config file, as ISPLITEE_<KEY>, or with its flag"
        else:
            value = err.get("input")
            if value is not None and not isinstance(value, dict):
                msg += f" (got {value!r})"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def load_config(cls: type[S], path: Path | None, flags: Mapping[str, Any]) -> S:
    """``cls`` from the TOML file at ``path`` (optional), the environment and ``flags``.

    ``flags`` holds only what the user gave on the command line (None values are ignored).
    """
    data: Mapping[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    token = _FILE_DATA.set(data)
    try:
        return cls(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        where = f" ({path}, {ENV_PREFIX}* environment, flags)" if path else ""
        raise ConfigError(f"invalid configuration{where}: {_describe(exc.errors())}") from None
    except SettingsError as exc:  # a value the settings library could not even read
        raise ConfigError(f"invalid configuration: {exc}") from None
    finally:
        _FILE_DATA.reset(token)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_example(cls: type[MqttSettings], title: str, required: Mapping[str, Any]) -> str:
    """An example TOML file with every key, its description and its default.

    ``deploy/*.example.toml`` are generated by this (``python -m shared.config``), and a test
    checks they are current, so the reference can never drift from the code.
    """
    lines = [
        f"# {title}",
        "# Every key with its default. Precedence, lowest first: this file, ISPLITEE_<KEY>",
        "# environment variables, command-line flags. Unknown keys are an error.",
        "",
    ]
    for name, info in cls.model_fields.items():
        lines.append(f"# {info.description}")
        if name in required:
            lines.append(f"{name} = {_toml_value(required[name])}")
        elif info.default_factory is not None:
            lines.append(f"# {name} = (computed: see above)")
        elif info.default is None:
            lines.append(f"# {name} =")
        else:
            lines.append(f"# {name} = {_toml_value(info.default)}")
        lines.append("")
    return "\n".join(lines)


def render_reference(cls: type[MqttSettings], required: Mapping[str, Any]) -> str:
    """A Markdown table of every key: environment variable, default, meaning.

    ``docs/configuration.md`` is generated by this beside the example files, so the reference
    the README points to can never drift from the code either.
    """
    rows = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for name, info in cls.model_fields.items():
        if name in required:
            default = "**required**"
        elif info.default_factory is not None:
            default = "(computed)"
        elif info.default is None:
            default = "(unset)"
        else:
            default = f"`{_toml_value(info.default)}`"
        text = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {default} | {text} |")
    return "\n".join(rows) + "\n"

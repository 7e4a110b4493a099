"""The service's settings: one typed object read from CATSDOGS_* environment variables.

A bad value stops the service at start-up with one line per problem that names the variable,
the value and what is allowed (load_settings), instead of a traceback.
"""

import functools
import sys
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from catsdogs.access import KeyConfigError, read_keys
from catsdogs.config import MODEL_NAME, ImageLimits, available_cores

ENV_PREFIX = "CATSDOGS_"
# Room for a file part's multipart headers (name, file name, content type) beside its bytes.
PART_OVERHEAD_BYTES = 64 * 1024


CommaSeparated = Annotated[list[str], NoDecode]


class ServiceSettings(ImageLimits, BaseSettings):
    """Serving configuration. Every field is the variable CATSDOGS_<FIELD NAME>; the image
    limits (max_bytes, max_pixels, min_side) are ImageLimits', shared with training."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    model_tag: str = Field(f"{MODEL_NAME}:latest", description="BentoML tag of the model to serve.")
    precision: Literal["int8", "fp32"] = Field(
        "int8", description="Which ONNX copy of the model serves: int8 (faster) or fp32."
    )
    workers: int = Field(
        1, ge=0, description="Serving processes, each with its own model (0: one per core)."
    )
    threads: int = Field(
        0,
        ge=0,
        description="Threads per worker for a model call and for decoding uploads "
        "(0: the cores divided among the workers).",
    )
    max_batch_size: int = Field(32, gt=0, description="Most images in one model call.")
    max_queue: int = Field(
        256, gt=0, description="Most images waiting for the model before new ones get 503."
    )
    max_files: int = Field(16, gt=0, description="Most files in one /predict_batch request.")
    monitoring_dir: Path = Field(
        Path("monitoring"), description="Where prediction records are written."
    )
    # Access (catsdogs/access.py). Lists are comma-separated.
    api_keys: CommaSeparated = Field([], description="API keys (or sha256:<digest>); off if none.")
    api_keys_file: Path | None = Field(None, description="A file of API keys, one per line.")
    metrics_keys: CommaSeparated = Field([], description="Keys for /metrics; open if none.")
    metrics_keys_file: Path | None = Field(None, description="A file of /metrics keys.")
    rate_limit: str = Field(
        "", description='Images per key or address, e.g. "20/second;600/minute"; off if empty.'
    )
    rate_limit_storage: str = Field(
        "memory://", description="Where counts are kept: memory:// or redis://host:port."
    )
    cors_origins: CommaSeparated = Field(
        [], description="Origins whose pages may call the API from a browser; none if empty."
    )

    @field_validator("api_keys", "metrics_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        if value.strip():
            parse_many(value)  # raises ValueError with what is wrong
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("use memory:// or redis://host:port")
        return value

    @functools.cached_property
    def api_key_digests(self) -> frozenset[bytes]:
        return read_keys(self.api_keys, self.api_keys_file)

    @functools.cached_property
    def metrics_key_digests(self) -> frozenset[bytes]:
        return read_keys(self.metrics_keys, self.metrics_keys_file)

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(**{name: getattr(self, name) for name in ImageLimits.model_fields})

    # One worker using every core is the default: benchmarks/README.md has the measurements.
    @property
    def worker_count(self) -> int:
        return self.workers or available_cores()

    @property
    def threads_per_worker(self) -> int:
        return self.threads or max(1, available_cores() // self.worker_count)

    def max_body_bytes(self, files: int) -> int:
        """Largest request body that can hold `files` files at the byte limit."""
        return files * (self.max_bytes + PART_OVERHEAD_BYTES)


def describe_errors(error: ValidationError) -> list[str]:
    """One line per invalid setting: variable, value given, what is allowed."""
    lines = []
    for problem in error.errors(include_url=False):
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        variable = f"{ENV_PREFIX}{field.upper()}"
        lines.append(f"{variable}={problem.get('input')!r} is not allowed: {problem['msg']}")
    return lines


def load_settings(**overrides) -> ServiceSettings:
    """The settings from the environment; on a bad value, exits with a one-line reason each."""
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as error:
        _stop(describe_errors(error))
    for keys in ("api_keys", "metrics_keys"):
        try:
            getattr(settings, f"{keys[:-1]}_digests")
        except KeyConfigError as error:
            _stop([f"{ENV_PREFIX}{keys.upper()}(_FILE): {error}"])
    return settings


def _stop(problems: list[str]):
    for line in problems:
        print(f"catsdogs: invalid setting {line}", file=sys.stderr)
    raise SystemExit(2)

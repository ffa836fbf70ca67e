"""Typed, frozen, validated experiment configs.

A config is built once, from a TOML document plus ``--set key=value`` overrides,
and validated before any work starts: unknown keys and out-of-range values fail
with a :class:`ConfigError` naming the key and what was expected. After that it is
an immutable value; ``config_to_dict`` gives back the resolved document that a run
folder stores.

The defaults of every field are the paper's setting (Pellegrini & Biroli, ICML
2022); the shipped TOML files override only what differs.
"""

from __future__ import annotations

import difflib
import json
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, ValidationError, model_validator

from imprint.data.base import DataSection, FileOptions, StrictSection, WrongValue
from imprint.data.cifar import CIFARData
from imprint.data.folder import FolderData
from imprint.data.imagenet import ImageNetData
from imprint.data.mnist import MNISTData
from imprint.data.registry import datasets as registered_datasets
from imprint.data.synthetic import NLGPData

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "flatten_document",
    "changed_keys",
    "config_differences",
    "allowed_change",
    "ConfigError",
    "Config",
    "NLGPData",
    "ImageNetData",
    "CIFARData",
    "MNISTData",
    "FolderData",
    "FileData",
    "ModelConfig",
    "TrainConfig",
    "PruneConfig",
    "SeedConfig",
    "load_config",
    "parse_config",
    "apply_overrides",
    "set_values",
    "read_toml",
    "config_to_dict",
]


class ConfigError(ValueError):
    """A config document or override that cannot be used; the message names the key."""


_Section = StrictSection  # every section follows the same rules as the data sections


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


# --------------------------------------------------------------------------- data
# Each reader module in imprint.data declares its config class (imprint.data.registry
# lists the modules); the union below is built from those declarations. The classes
# are imported here by name too, for `from imprint.config import CIFARData`.

_DATASETS = registered_datasets()
_DATA_CONFIGS = tuple(dataset.config for dataset in _DATASETS)

if TYPE_CHECKING:  # a union built from the registry at run time: typed by its base
    DataConfig = DataSection
    FileData = FileOptions
else:
    DataConfig = Annotated[Union[_DATA_CONFIGS], Field(discriminator="name")]  # noqa: UP007
    FileData = Union[tuple(c for c in _DATA_CONFIGS if issubclass(c, FileOptions))]  # noqa: UP007


class ModelConfig(_Section):
    """The paper's FCN: BN on the input of every linear layer, ReLU, Glorot-normal init."""

    # At most 64 hidden layers (the paper has 3): a tiny file must not ask for a loop
    # without end; widths are bounded by the memory estimate at the start of a run.
    hidden: Annotated[list[PositiveInt], Field(max_length=64)] = [1024, 1024, 1024]
    bn_momentum: Annotated[float, Field(gt=0.0, le=1.0)] = (
        0.01  # decay 0.99 of the running averages
    )
    bn_eps: Annotated[float, Field(gt=0.0)] = 1e-3

    @model_validator(mode="after")
    def _at_least_one_hidden(self) -> ModelConfig:
        if not self.hidden:
            raise ValueError("model.hidden must list at least one hidden width. Got [].")
        return self


class TrainConfig(_Section):
    """Plain SGD on batches drawn with replacement, validated every ``eval_every`` steps."""

    steps: Annotated[int, Field(gt=0, le=10**9)] = 100_000  # 1e9: 10,000x the paper's
    batch_size: PositiveInt = 1000
    lr: Annotated[float, Field(gt=0.0)] = 0.1
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # off in the paper
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0  # off in the paper
    eval_every: PositiveInt = 100
    eval_batch_size: PositiveInt = 10_000
    # Matmul precision on a CUDA device: "tf32" (TF32 tensor cores) or "bf16" (bfloat16
    # autocast, float32 master weights) trade exactness for speed; both are refused on a
    # CPU, where float32 is the only fast choice.
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    # torch.compile the training step (fuses its ~100 small kernels). Off by default:
    # on the CPU of docs/benchmarks.md it makes the default 144-128-4 net's steps 1.5x
    # faster but the matmul-bound paper FCN's no faster, and the first compile costs
    # ~10 s (cached on disk after), about what a 16-round demo saves. Results agree
    # with the eager step to float rounding.
    compile: bool = False
    # Save the round in progress every this many steps (RUN/checkpoint.safetensors:
    # weights, momentum, generator and loss sums), so that a killed run resumes inside
    # the round, not from its start. 0: only completed rounds are kept. Results do not
    # depend on it; it may change on resume.
    checkpoint_every: Annotated[int, Field(ge=0)] = 5000
    # Sparse execution of a round (imprint.sparse): "auto" runs a layer on its live
    # weights alone when its density is below the crossover measured for the device
    # (docs/benchmarks.md) and its step is large enough; "on" every pruned layer; "off"
    # the dense engine. The results agree to float32 rounding; rounds that prune while
    # training (gmp) run dense. Not compiled by train.compile.
    sparse: Literal["auto", "on", "off"] = "auto"


class PruneConfig(_Section):
    """The IMP protocol and its controls."""

    # A registered procedure (imprint.procedures.PROCEDURES: imp, oneshot, random, reinit,
    # finetune and the criteria researchers compare IMP with).
    procedure: str = "imp"
    fraction: Fraction = 0.3  # of the weights still alive, per round
    # Optional per-layer rates (one per linear layer; 0 leaves a layer dense).
    layer_fractions: list[Annotated[float, Field(ge=0.0, lt=1.0)]] | None = None
    scope: Literal["layer", "global"] = "layer"
    # Linear layers never pruned, by index (negative counts from the output); the paper
    # leaves the output layer dense.
    exclude_layers: list[int] = [-1]
    rewind_step: Annotated[int, Field(ge=0)] = 1000  # late rewinding; 0 = back to init
    max_rounds: Annotated[int, Field(ge=0)] = 30  # pruned rounds after the dense round 0
    target_density: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # 0 = no target
    # Stop once, in some pruned layer, at most this fraction of units has an incoming
    # connection (the paper: 0.2). 0 disables the rule.
    min_connected_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    # A finished IMP run whose masks (reinit) or per-layer densities (oneshot, random)
    # the control matches. Required for reinit.
    reference_run: str | None = None
    # The procedure's own options (the fields of its Procedure.options class, e.g.
    # [prune.options] temperature = 200 for grasp), checked against the procedure.
    options: dict[str, Any] = {}


class SeedConfig(_Section):
    """Separate random streams, so changing one leaves the others as they were."""

    init: Annotated[int, Field(ge=0)] = 0  # weight initialisation
    data: Annotated[int, Field(ge=0)] = 0  # batch order
    prune: Annotated[int, Field(ge=0)] = 0  # random masks and other pruning randomness
    # Seeds trained together as replicas of one batched model, in one process (`imprint
    # run --seeds 0,1,2`): seed s is the run with init = data = prune = s, written to its
    # own run folder GROUP/seed_s. Empty: one run with the three seeds above.
    group: list[Annotated[int, Field(ge=0)]] = []

    @model_validator(mode="after")
    def _distinct_group(self) -> SeedConfig:
        if len(set(self.group)) != len(self.group):
            raise ValueError(f"seeds.group must list distinct seeds. Got {self.group}.")
        if len(self.group) > 256:
            raise ValueError(f"seeds.group may list at most 256 seeds. Got {len(self.group)}.")
        return self


class Config(_Section):
    # Experiment tracking (imprint.tracking): a top-level key of the TOML file, e.g.
    # track = ["tensorboard", "mlflow"]; it changes no result, so a resume may change it.
    track: tuple[Literal["tensorboard", "mlflow"], ...] = ()
    data: DataConfig = NLGPData()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    prune: PruneConfig = PruneConfig()
    seeds: SeedConfig = SeedConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_dataset(cls, document: Any) -> Any:
        # A [data] table without a name means the built-in NLGP data.
        if isinstance(document, dict) and isinstance(document.get("data"), dict):
            if "name" not in document["data"]:
                document = {**document, "data": {"name": "nlgp", **document["data"]}}
        return document

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if len(set(self.track)) != len(self.track):
            raise ValueError(f"track lists a tracker twice. Got {list(self.track)}.")
        n_linear = len(self.model.hidden) + 1
        if self.prune.layer_fractions is not None and len(self.prune.layer_fractions) != n_linear:
            raise ValueError(
                f"prune.layer_fractions must have one rate per linear layer ({n_linear}). "
                f"Got {len(self.prune.layer_fractions)}."
            )
        if self.prune.layer_fractions is not None and self.prune.scope == "global":
            raise ValueError(
                "prune.layer_fractions needs prune.scope = 'layer' (a global scope ranks "
                "all layers against one threshold). Got scope 'global'."
            )
        for index in self.prune.exclude_layers:
            if not -n_linear <= index < n_linear:
                raise ValueError(
                    f"prune.exclude_layers entries must be in [{-n_linear}, {n_linear - 1}]. "
                    f"Got {index}."
                )
        from imprint.procedures import get_procedure  # the registry sits above config
        from imprint.procedures.base import start_from_rewind

        procedure = get_procedure(self.prune.procedure)
        if procedure.start is start_from_rewind and self.prune.rewind_step >= self.train.steps:
            raise ValueError(
                f"prune.rewind_step must be smaller than train.steps ({self.train.steps}). "
                f"Got {self.prune.rewind_step}."
            )
        procedure.parse_options(self.prune.options)
        if procedure.needs_reference and not self.prune.reference_run:
            raise ValueError(
                "prune.reference_run must name a finished IMP run folder when "
                f"prune.procedure = '{procedure.name}' (its masks are reused)."
            )
        return self


# --------------------------------------------------------------------------- loading


def _format_errors(
    error: ValidationError, source: str, overridden: dict[str, str] | None = None
) -> str:
    """One line per problem, each naming where the value came from: the config file, or
    ``--set key=value`` when an override set it (``overridden``: dotted key -> its text)."""
    overridden = overridden or {}
    lines = []
    unknown_data: list[str] = []
    for item in error.errors():
        loc = ".".join(str(part) for part in _user_loc(item["loc"]))
        kind = item["type"]
        where = _origin(loc, source, overridden)
        if kind == "extra_forbidden":
            parent = _section_for(item["loc"][:-1])  # tags included: they pick the model
            allowed = sorted(parent.model_fields) if parent else []
            key = loc.rpartition(".")[2]
            if loc.startswith("data.") and loc not in overridden and _other_datasets_key(key):
                unknown_data.append(key)
                continue
            close = difflib.get_close_matches(loc.rpartition(".")[2], allowed, n=1)
            hint = f" Did you mean '{loc.rpartition('.')[0]}.{close[0]}'?" if close else ""
            lines.append(
                f"{where}: unknown key '{loc}'.{hint} Allowed keys here: {', '.join(allowed)}."
            )
            continue
        if kind == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            lines.append(
                f"{where}: '{loc}' must be one of {expected}. Got {_shown(item.get('input'))}."
            )
        elif kind == "union_tag_invalid":
            expected = item.get("ctx", {}).get("expected_tags", "")
            tag = item.get("ctx", {}).get("tag")
            lines.append(f"{where}: '{loc}.name' must be one of {expected}. Got {tag!r}.")
        elif kind == "value_error" and isinstance(item["ctx"]["error"], WrongValue):
            wrong = item["ctx"]["error"]
            key = f"{loc}.{wrong.field}" if loc else wrong.field
            where = _origin(key, source, overridden)
            lines.append(
                f"{where}: '{key}' {wrong.reason}. "
                f"Got {_shortened(json.dumps(wrong.value))}."  # as TOML writes it: true, [true, 2]
            )
        elif kind == "value_error":
            # Our own validators already name the key and what came.
            lines.append(f"{where}: {str(item['ctx']['error'])}")
        else:
            msg = item["msg"]
            key = f"'{loc}'" if loc else "config"
            got = item.get("input")
            got_text = "" if isinstance(got, dict) else f" Got {_shown(got)}."
            lines.append(f"{where}: {key}: {msg}.{got_text}")
    if unknown_data:
        name = _data_name(error)
        lines.append(
            f"{source}: data.name = {name!r} has no key(s) {', '.join(sorted(unknown_data))}: "
            f"they are options of another dataset (the config file was written for one). "
            f"Remove them from the [data] table, or start from a config written for {name!r} "
            "(`imprint datasets` lists each dataset's keys)."
        )
    return "\n".join(lines)


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened so that an error stays one readable line."""
    return _shortened(repr(value), limit)


def _shortened(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} characters)"


def _origin(loc: str, source: str, overridden: dict[str, str]) -> str:
    """``--set key=value`` when an override set ``loc`` (or a section above it)."""
    parts = loc.split(".")
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in overridden:
            item = overridden[key]
            return f"--set {item if len(item) <= 80 else item[:65] + '...'}"
    return source


def _other_datasets_key(key: str) -> bool:
    return any(key in model.model_fields for model in _DATA_MODELS.values())


def _data_name(error: ValidationError) -> str:
    for item in error.errors():
        if item["loc"] and item["loc"][0] == "data" and len(item["loc"]) > 1:
            return str(item["loc"][1])
    return "?"


_DATA_MODELS: dict[str, type[BaseModel]] = {
    name: dataset.config for dataset in _DATASETS for name in dataset.names
}
_DATA_TAGS = tuple(_DATA_MODELS)


def _user_loc(loc: tuple) -> tuple:
    """Drop pydantic's union tag: ('data', 'nlgp', 'gain') is the user's 'data.gain'."""
    if len(loc) > 1 and loc[0] == "data" and loc[1] in _DATA_TAGS:
        return (loc[0], *loc[2:])
    return loc


def _section_for(loc: tuple) -> type[BaseModel] | None:
    """The model class that owns the keys at ``loc`` (for listing allowed keys)."""
    model: type[BaseModel] = Config
    for part in loc:
        if part in _DATA_MODELS:
            model = _DATA_MODELS[part]
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif part == "data":
            model = NLGPData
        else:
            return None
    return model


def parse_config(
    document: dict[str, Any], source: str = "config", overridden: dict[str, str] | None = None
) -> Config:
    """Validate a config document (a nested dict), raising :class:`ConfigError`."""
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source, overridden)) from None


def _parse_value(text: str) -> Any:
    """A TOML value (``2000``, ``0.1``, ``true``, ``[1, 2]``, ``"imp"``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def set_values(document: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with dotted keys ({"train.steps": 2000}) set to values."""
    import copy

    result = copy.deepcopy(document)
    for key, value in values.items():
        parts = key.split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{key}': '{part}' is a value, not a section.")
            node = child
        node[parts[-1]] = value
    return result


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``document`` with ``key.path=value`` overrides applied."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set expects key=value (for example train.steps=2000). Got {item!r}"
                + (f"; write --set {key}=VALUE, with '=' and no space." if key else ".")
            )
        values[key] = _parse_value(value.strip())
    return set_values(document, values)


TOML_LIMIT = 1 << 20  # a config or sweep file of more than 1 MiB is not one


def read_toml(path: str | Path, what: str = "Config file") -> dict[str, Any]:
    """A TOML document, or a ConfigError naming the file."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        raise ConfigError(f"{what} {path} does not exist (expected a TOML file).") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file (expected a TOML file).")
    if info.st_size > TOML_LIMIT:
        raise ConfigError(
            f"{what} {path} holds {info.st_size} bytes; a config is at most {TOML_LIMIT}."
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read: {error.strerror or error}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what} {path} is not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path} is nested too deeply to be a config.") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a TOML config, apply ``--set`` overrides, validate. Fails before any work."""
    document = apply_overrides(read_toml(path), overrides or [])
    overridden = {item.partition("=")[0].strip(): item for item in overrides or []}
    return parse_config(document, source=str(path), overridden=overridden)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The resolved config as a plain document (TOML-serialisable: no None values)."""
    return _drop_none(config.model_dump(mode="json"))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


# ------------------------------------------------------------------ differences


def flatten_document(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_document(value, name + "."))
        else:
            flat[name] = value
    return flat


def changed_keys(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    a, b = flatten_document(stored), flatten_document(current)
    return sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))


def allowed_change(key: str, allow: Sequence[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in allow)


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    a, b = flatten_document(stored), flatten_document(current)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            lines.append(
                f"{key}: {a.get(key, '(unset)')!r} in the folder, {b.get(key, '(unset)')!r} now"
            )
    return lines

"""Training configuration: the engine's settings, a recipe's hyper-parameters, TOML files.

Precedence, lowest first: the recipe's protocol defaults < `--config FILE.toml` < command-line
flags. A TOML file is flat `key = value` lines using the option names with `_` (`lr_phases =
[[0, 0.01], [11, 0.001]]`, `batch_size = 192`, `device = "cuda"`); unknown keys are an error, so a
typo never passes silently. The resolved configuration is written to every run folder as
`config.toml` (re-usable with `--config`) and `config.json`.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import ConfigError
from iqa_cli.jsonio import dumps
from iqa_cli.seeds import MAX_SEED
from iqa_cli.textlist import comma_list

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the `tomli` backport
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

DEVICES = ("auto", "cpu", "cuda")
AmpMode = Literal["auto", "bf16", "fp16", "tf32", "off"]
Switch = Literal["auto", "on", "off"]
SelectOn = Literal["val", "test"]
AMP_MODES: tuple[str, ...] = typing.get_args(AmpMode)
SWITCHES: tuple[str, ...] = typing.get_args(Switch)
SELECT_ON: tuple[str, ...] = typing.get_args(SelectOn)


@dataclass
class EngineConfig:
    """How to run (not what to learn): device, precision, selection policy, seeds, logging."""

    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda or cuda:N"})
    amp: AmpMode = field(
        default="auto", metadata={"help": "mixed precision: auto (bf16 on GPU, off on CPU), bf16, fp16, off"}
    )
    compile: bool = field(default=False, metadata={"help": "wrap the model in torch.compile"})
    channels_last: Switch = field(
        default="auto", metadata={"help": "channels-last memory format: auto (where the recipe says it helps), on, off"}
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "seed of data order, augmentation and init (with 0, VT-IQA, IEIT and AL-IQA re-seed each batch "
            "with the seed their scripts give it; the other methods' seeds and all data orders are iqa's)"
        },
    )
    select_on: SelectOn = field(
        default="val",
        metadata={
            "help": "part that picks the kept model: val (carved from train) or test (the papers' habit, optimistic)"
        },
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "share of the training part held out for model selection (select_on=val)"}
    )
    eval_test: bool = field(
        default=True, metadata={"help": "also log test metrics every evaluation (never used to select)"}
    )
    eval_every: int = field(default=1, metadata={"help": "evaluate every N epochs"})
    watch: str | None = field(
        default=None,
        metadata={
            "help": "other datasets (names or cache files, comma-separated) scored whole at every evaluation; "
            "logged, never used to select (with --split whole: VIPNet's cross-dataset protocol)"
        },
    )
    eval_amp: AmpMode = field(
        default="auto",
        metadata={
            "help": "precision of evaluations: auto (TF32 matrix products on GPUs, float32 outputs; float32 on CPUs), "
            "tf32, off (float32), bf16 or fp16 (outputs tie at 1/64 steps)"
        },
    )
    preload_gb: float | None = field(
        default=None,
        metadata={
            "help": "keep the prepared views of the whole dataset in RAM when they fit this many GiB "
            "(default: 60 % of the memory available when the run starts, within the job's memory limit)"
        },
    )
    gpu_cache: Switch = field(
        default="auto",
        metadata={
            "help": "keep the preloaded views in GPU memory and cut batches there: auto (when they take at most "
            "a quarter of the free GPU memory), on, off"
        },
    )
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimiser steps (0 = no limit)"})
    time_limit: float = field(
        default=0.0,
        metadata={
            "help": "minutes from the command's start (covering every split, and every run of a sweep) after which "
            "the run stops as if preempted (0 = none)"
        },
    )
    log_every: int = field(
        default=0, metadata={"help": "also a progress line every N steps (0: one line per epoch only)"}
    )

    def validate(self) -> EngineConfig:
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got '{self.device}'")
        check_choices(self)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        parse_watch(self.watch)
        if self.eval_every < 1:
            raise ConfigError(f"--eval-every: must be at least 1, got {self.eval_every}")
        if self.log_every < 0:
            raise ConfigError(f"--log-every: must be at least 0, got {self.log_every}")
        if self.max_steps < 0 or self.time_limit < 0 or (self.preload_gb is not None and self.preload_gb < 0):
            raise ConfigError("max_steps, time_limit and preload_gb cannot be negative")
        return self


def parse_watch(value: str | None) -> list[str]:
    """`--watch a,b` -> ['a', 'b'] (names of prepared caches or cache files)."""
    if not value:
        return []
    names = comma_list(str(value), "--watch")
    if len(set(names)) != len(names):
        raise ConfigError(f"--watch: a dataset is named twice in '{value}'")
    return names


# ------------------------------------------------------------------------------------ value parsing


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _split_text(text: str) -> list[str]:
    try:
        return comma_list(text, "", separators=",;")
    except ConfigError:
        raise ValueError(text) from None  # the caller names the option and what it expects


def protocol_default(base: type, name: str, default: Any, *, help: str | None = None) -> Any:
    """Field `name` of dataclass `base` with a method's own default (and help, where it says more), so the
    option stays declared once: `plateau_after: int = protocol_default(PlateauParams, "plateau_after", 60)`."""
    declared = next(f for f in fields(base) if f.name == name)
    metadata = dict(declared.metadata) | ({"help": help} if help is not None else {})
    return field(default=default, metadata=metadata)


def choices_of(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a `Literal[...]` field type (optional or not); None for other types."""
    inner, _ = _strip_optional(tp)
    return typing.get_args(inner) if typing.get_origin(inner) is typing.Literal else None


def _choice_text(choices: tuple[Any, ...]) -> str:
    return ", ".join(str(c) for c in choices)


def check_choice(name: str, tp: Any, value: Any) -> None:
    """ConfigError naming the option when a `Literal[...]` field holds a value outside its choices."""
    choices = choices_of(tp)
    if choices is None or (value is None and _strip_optional(tp)[1]):
        return
    if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
        raise ConfigError(f"{name} must be one of {_choice_text(choices)}, got '{value}'")


def check_choices(obj: Any) -> None:
    """Every `Literal[...]` field of dataclass `obj` within its choices: the one check of choice options,
    for values from the command line, a TOML file, a saved run or Python."""
    for name, tp in field_types(type(obj)).items():
        check_choice(name, tp, getattr(obj, name))


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Turn a TOML value or a command-line string into the field's type, or raise ConfigError.

    Tuples of pairs accept `"0:0.01,11:0.001"` on the command line and `[[0, 0.01], [11, 0.001]]` in TOML;
    a `Literal[...]` field accepts one of its values (numbers also as text).
    """
    inner, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} needs a value")
    choices = choices_of(inner)
    if choices is not None:
        kind = type(choices[0])
        try:
            value = kind(value) if kind is not str and isinstance(value, str) else value
        except ValueError:
            pass  # reported as not one of the choices
        check_choice(name, inner, value)
        return value
    try:
        if inner is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if inner is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if inner is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if math.isnan(number):
                raise ValueError(value)
            return number
        if inner is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        origin = typing.get_origin(inner)
        if origin is tuple:
            args = typing.get_args(inner)
            element = args[0]
            items = _split_text(value) if isinstance(value, str) else list(value)
            if typing.get_origin(element) is tuple:  # tuple of pairs, e.g. lr phases
                pair_types = typing.get_args(element)
                pairs = []
                for item in items:
                    parts = item.split(":") if isinstance(item, str) else list(item)
                    if len(parts) != len(pair_types):
                        raise ValueError(item)
                    pairs.append(tuple(_element(name, t, p) for t, p in zip(pair_types, parts, strict=True)))
                return tuple(pairs)
            return tuple(_element(name, element, item) for item in items)
    except (TypeError, ValueError):
        not_nan = ", not NaN" if isinstance(value, (str, float)) and str(value).strip().lower() == "nan" else ""
        raise ConfigError(f"invalid value for {name}: {value!r} (expected {_describe(tp)}{not_nan})") from None
    raise ConfigError(f"{name}: unsupported option type {tp}")  # pragma: no cover - programming error


def _element(name: str, tp: Any, value: Any) -> Any:
    """One element of a list or pair option; a bad one is reported with the whole value (`0:x` of
    `--lr-phases 0:0.01,11:x`), against the whole option's expected form."""
    try:
        return coerce(name, tp, value)
    except ConfigError:
        raise ValueError(value) from None


def _describe(tp: Any) -> str:
    inner, optional = _strip_optional(tp)
    choices = choices_of(inner)
    if choices is not None:
        text = "one of " + _choice_text(choices)
    elif typing.get_origin(inner) is tuple:
        element = typing.get_args(inner)[0]
        if typing.get_origin(element) is tuple:
            names = ":".join(getattr(t, "__name__", str(t)) for t in typing.get_args(element))
            text = f"comma-separated {names} pairs"
        else:
            text = f"comma-separated {getattr(element, '__name__', element)} values"
    else:
        text = getattr(inner, "__name__", str(inner))
    return text + (" or none" if optional else "")


# Valid ranges of numeric options, by field name: (low, low inclusive, high, high inclusive); None = open.
# Every numeric option of every method is checked against its own entry, or the first matching rule
# below, before any work starts (`--epochs 0`, `--batch-size 0`, `--lr -1` are errors, not no-ops).
_AT_LEAST_1 = (1, True, None, False)
_POSITIVE = (0, False, None, False)
_NON_NEGATIVE = (0, True, None, False)
_FRACTION_OPEN = (0, False, 1, False)
_SHARE = (0, True, 1, False)
_FACTOR = (0, False, 1, True)
_PIXEL_SIDE = (1, True, 8192, True)
_VIEW_COUNT = (1, True, 256, True)
RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "epochs": _AT_LEAST_1,
    "val_fraction": _FRACTION_OPEN,
    "dropout": _SHARE,
    "momentum": _SHARE,
    "lr_factor": _FACTOR,
    "lr_decay": _FACTOR,
    "decay_ratio": _FACTOR,
    "lr_gamma": _FACTOR,  # a step decay's multiplier: above 1 it would grow the learning rate
    "seed": (0, True, MAX_SEED, True),
    "test_seed": (0, True, MAX_SEED, True),
    "budget": (0, False, 100, False),
    # IEIT's low-quality bar, on the 1-5 training scale: at most 1 no image is below it, above 5 every image
    # is, and the lq_* columns would be the whole part's figures (a bar given on a 0-100 native scale)
    "lq_threshold": (1, False, 5, True),
    # a std (1-5 scale) wider than the scale flattens every derived label toward one uniform distribution
    "label_std": (0, False, 4, True),
    "log_every": _NON_NEGATIVE,  # 0: no step lines
    # Sizes and counts of views: far above any protocol's, and low enough that a slip (`--mosaic-source
    # 99999999999`, `--test-crops 99999999999`) is one line here, not an allocator's crash at the first batch.
    **dict.fromkeys(
        ("global_source", "crop_size", "mosaic_source", "mosaic_patch", "patch_size", "resize_long", "resize_short"),
        _PIXEL_SIDE,
    ),
    **dict.fromkeys(("test_crops", "patch_num", "train_patch_num", "test_patch_num", "mosaic_grid"), _VIEW_COUNT),
    # AL-IQA's k-means stand-in runs once per repeat over the pool: `--distill-repeats 99999999999` never ended.
    "distill_repeats": _VIEW_COUNT,
    # Network sizes, far above any protocol's: `--depth 99999999999` built layers until the memory ran out.
    "depth": (1, True, 64, True),
    "embed_dim": (1, True, 8192, True),
    **dict.fromkeys(("num_heads", "heads"), _VIEW_COUNT),
}
_SUFFIX_RULES: tuple[tuple[str, tuple[float | None, bool, float | None, bool]], ...] = (
    ("batch_size", _AT_LEAST_1),
    ("_size", _AT_LEAST_1),
    ("_num", _AT_LEAST_1),
    ("crops", _AT_LEAST_1),
    ("heads", _AT_LEAST_1),
    ("depth", _AT_LEAST_1),
    ("_dim", _AT_LEAST_1),
    ("_period", _AT_LEAST_1),
    ("_every", _AT_LEAST_1),
    ("_source", _AT_LEAST_1),
    ("_patch", _AT_LEAST_1),
    ("_grid", _AT_LEAST_1),
    ("_repeats", _AT_LEAST_1),
    ("_images", _AT_LEAST_1),
    ("_keep", _AT_LEAST_1),
    ("_mult", _AT_LEAST_1),
    ("_short", _AT_LEAST_1),
    ("_long", _AT_LEAST_1),
    ("lr", _POSITIVE),
    ("grad_clip", _POSITIVE),
)


def option_range(name: str) -> tuple[float | None, bool, float | None, bool]:
    """The valid range of numeric option `name` (see RANGES); anything else must be >= 0."""
    if name in RANGES:
        return RANGES[name]
    for suffix, bounds in _SUFFIX_RULES:
        if name.endswith(suffix):
            return bounds
    return _NON_NEGATIVE


def _number(value: float) -> str:
    """A bound or value as typed: whole numbers in full (a seed's bound 4294967295, not 4.29497e+09)."""
    if isinstance(value, int):
        return str(value)  # an integer typed, however large (2**64, not 1.84467e+19)
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"


def check_range(name: str, value: Any) -> None:
    """ConfigError naming `--name` when a numeric value is outside its declared range (or not finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    option = "--" + name.replace("_", "-")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{option}: must be a finite number, got {value}")
    low, low_in, high, high_in = option_range(name)
    if low is not None and (value < low or (value == low and not low_in)):
        expected = f"at least {_number(low)}" if low_in else f"greater than {_number(low)}"
        raise ConfigError(f"{option}: must be {expected}, got {_number(value)}")
    if high is not None and (value > high or (value == high and not high_in)):
        expected = f"at most {_number(high)}" if high_in else f"less than {_number(high)}"
        raise ConfigError(f"{option}: must be {expected}, got {_number(value)}")


def apply_values(obj: Any, values: dict[str, Any], *, source: str) -> Any:
    """A copy of dataclass `obj` with `values` (names must be fields) coerced, range-checked and set."""
    types_ = field_types(type(obj))
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}")
    # A value typed on the command line is named as the flag the user typed; one from a file, as its key.
    flags = source == "options"
    changes = {
        name: coerce("--" + name.replace("_", "-") if flags else name, types_[name], value)
        for name, value in values.items()
    }
    for name, value in changes.items():
        if isinstance(value, tuple) and name.endswith("phases"):
            for pair in value:
                if isinstance(pair, tuple) and len(pair) == 2:
                    _check_phase(name, *pair)
        else:
            check_range(name, value)
    return dataclasses.replace(obj, **changes)


def _check_phase(name: str, epoch: Any, rate: Any) -> None:
    """One `epoch:lr` pair of a phase list: the epoch >= 0, the rate finite and > 0."""
    option = "--" + name.replace("_", "-")
    if isinstance(epoch, (int, float)) and epoch < 0:
        raise ConfigError(f"{option}: phase epochs must be at least 0, got {epoch:g}")
    if isinstance(rate, (int, float)) and not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"{option}: learning rates must be greater than 0, got {rate:g}")


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------- TOML


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise ConfigError("reading TOML on Python 3.10 needs the `tomli` package (pip install tomli)", path=path)
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError("is UTF-16 text (Windows' Unicode): TOML files are UTF-8, save it as UTF-8", path=path)
    try:  # a UTF-8 byte-order mark (Windows editors write one) is no TOML, but says nothing either
        data = tomllib.loads(raw.removeprefix(codecs.BOM_UTF8).decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML ({exc})", path=path) from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"expected flat `key = value` lines, found table(s) {', '.join(nested)}", path=path)
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_text(sections: dict[str, dict[str, Any]], header: str) -> str:
    """The TOML text of `config.toml` (flat keys, one commented block per section, None as comments)."""
    lines = [f"# {header}"]
    for title, values in sections.items():
        lines.append(f"\n# --- {title}")
        for key, value in values.items():
            plain = to_plain(value)
            lines.append(f"# {key} = (none)" if plain is None else f"{key} = {_toml_value(plain)}")
    return "\n".join(lines) + "\n"


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    """Write `config.toml` (re-usable with `--config`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            config_text(sections, "Resolved configuration of this run; re-usable with `--config`."), encoding="utf-8"
        )


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dumps(to_plain(obj), indent=2) + "\n", encoding="utf-8")  # strict: NaN and infinities as null


def split_by_owner(values: dict[str, Any], *owners: type) -> list[dict[str, Any]]:
    """Distribute flat keys to the dataclasses that own them; unknown keys raise."""
    known = [set(field_types(cls)) for cls in owners]
    parts: list[dict[str, Any]] = [{} for _ in owners]
    unknown = []
    for key, value in values.items():
        for names, part in zip(known, parts, strict=True):
            if key in names:
                part[key] = value
                break
        else:
            unknown.append(key)
    if unknown:
        import difflib

        choices = sorted(set().union(*known))
        hints = {key: difflib.get_close_matches(key, choices, n=1) for key in sorted(unknown)}
        said = ", ".join(f"{key} (did you mean {hint[0]}?)" if hint else key for key, hint in hints.items())
        raise ConfigError(f"unknown option(s) {said}")
    return parts

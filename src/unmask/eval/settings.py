"""``model_args`` of the lm-eval model, parsed into the library's config dataclasses.

lm-eval hands the model a flat mapping (``pretrained=...,planner=eb,gamma=2``).
It splits here into :class:`EvalSettings` (what to load, how to batch and score)
and a :class:`~unmask.config.GenerationConfig` (how to generate), with the
planner built by :func:`~unmask.planners.make_planner`. Every mistake (an
unknown key, a planner setting the chosen planner does not take, a value of the
wrong type) raises ``ValueError`` naming the key and the allowed values, before
any model is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import CACHE_MODES, GenerationConfig
from ..planners import PLANNERS, Planner, make_planner, parse_planner, planner_fields

log = logging.getLogger(__name__)
GREEDY_CHECKS = ("reveal", "argmax", "none")
DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZE = ("none", "int8", "int4")  # unmask.models.quantize.QUANTIZE_MODES (not imported: that loads transformers)
# every setting of every registered planner (``inner`` is a wrapper's inner planner: spaced, edit, remask, stable)
PLANNER_KEYS: tuple[str, ...] = tuple(sorted({f for name in PLANNERS for f in planner_fields(name)}))
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "tempered_scores")
GENERATION_KEYS = ("gen_length", "block_length", "planner", *SAMPLING_KEYS, "cfg_scale", "cache", "compile", "early_exit")


@dataclass(frozen=True)
class EvalSettings:
    """What the lm-eval model loads and how it batches and scores (everything but generation)."""

    pretrained: str | None = None  # name or path for unmask.models.load
    factory: str | None = None  # "module:function" or "/path/file.py:function" returning (denoiser, tokenizer)
    dtype: str = "bfloat16"
    device: str | None = None  # None: cuda if available, else cpu (per rank under accelerate)
    batch_size: int = 1  # prompts per generate() call; rows (draws) per call when scoring
    mc_num: int = 128  # Monte-Carlo draws per loglikelihood request (LLaDA's default)
    greedy_check: str = "reveal"  # how loglikelihood's is_greedy is decided, see likelihood.py
    seed: int = 0  # base of the per-request seeds of the likelihood draws and of sampling
    native: bool | None = None  # unmask.models.load: None = native when the family is known, False = AutoModel
    trust_remote_code: bool = False  # accepted for lm-eval's --trust_remote_code; unmask.models.load decides
    quantize: str = "none"  # unmask.models.load: weight-only int8 / int4 with torchao

    def __post_init__(self) -> None:
        for name in ("batch_size", "mc_num"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.greedy_check not in GREEDY_CHECKS:
            raise ValueError(f"greedy_check must be one of {GREEDY_CHECKS}, got {self.greedy_check!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.quantize not in QUANTIZE:
            raise ValueError(f"quantize must be one of {QUANTIZE}, got {self.quantize!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")


SETTINGS_KEYS = tuple(f.name for f in dataclasses.fields(EvalSettings))
# accepted for lm-eval compatibility: max_batch_size only matters for batch_size=auto
IGNORED_KEYS = ("max_batch_size",)
KNOWN_KEYS: tuple[str, ...] = tuple(sorted({*SETTINGS_KEYS, *GENERATION_KEYS, *PLANNER_KEYS, *IGNORED_KEYS}))


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{name} must be an int, got {value!r}")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{name} must be a number, got {value!r}")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() == "none")


def _planner_value(key: str, value: Any) -> Any:
    """Coerce one planner setting given as text (from the command line) to the planner's type."""
    if _none(value):
        return None
    if key in ("base", "skip_exp", "start_stride", "steps", "max_edit_calls", "max_calls", "window"):
        return _as_int(key, value)
    if key in ("confidence_threshold", "gamma", "tau", "factor", "threshold", "wide", "narrow", "eta"):
        return _as_float(key, value)
    if key == "counts":
        if isinstance(value, (list, tuple)):
            return tuple(_as_int("counts", c) for c in value)
        if isinstance(value, int):
            return (value,)
        if isinstance(value, str) and value != "dilated":  # "4|2|2" or "4 2 2": commas split model_args
            return tuple(_as_int("counts", c) for c in value.replace("|", " ").split())
        return value
    if key == "inner" and isinstance(value, str):
        return parse_planner(value)
    return value


def build_planner(planner: Any, params: Mapping[str, Any]) -> Planner:
    """A planner from a name plus settings, a spec string (``"spaced(eb(gamma=2))"``) or an object."""
    if isinstance(planner, Planner) or (isinstance(planner, str) and "(" in planner):
        if params:
            raise ValueError(
                f"planner settings {sorted(params)} given both as keys and in planner={planner!r}; "
                "give them in one place (e.g. planner=eb,gamma=2)"
            )
        return planner if isinstance(planner, Planner) else parse_planner(planner)
    return make_planner(planner, **{k: _planner_value(k, v) for k, v in params.items()})  # which checks name and keys


def parse_model_args(args: Mapping[str, Any]) -> tuple[EvalSettings, GenerationConfig]:
    """Split lm-eval ``model_args`` into :class:`EvalSettings` and a :class:`GenerationConfig`."""
    unknown = sorted(set(args) - set(KNOWN_KEYS))
    if unknown:
        raise ValueError(f"unknown model_args {unknown}; the known keys are {list(KNOWN_KEYS)}")
    ignored = {k: args[k] for k in IGNORED_KEYS if k in args and not _none(args[k])}
    if ignored:
        log.warning("model_args %s are ignored: they only matter for batch_size=auto, which unmask does not use", ignored)
    settings: dict[str, Any] = {}
    for key in SETTINGS_KEYS:
        if key not in args or _none(args[key]):
            continue
        value = args[key]
        if key in ("batch_size", "mc_num", "seed"):
            if key == "batch_size" and isinstance(value, str) and value.startswith("auto"):
                raise ValueError("batch_size must be a positive int; 'auto' is not supported by the unmask model")
            value = _as_int(key, value)
        elif key in ("trust_remote_code", "native"):
            value = _as_bool(key, value)
        else:
            value = str(value)
        settings[key] = value
    gen: dict[str, Any] = {}
    for key in ("gen_length", "block_length", "top_k"):
        if key in args and not _none(args[key]):
            gen[key] = _as_int(key, args[key])
    for key in ("temperature", "top_p", "cfg_scale"):
        if key in args and not _none(args[key]):
            gen[key] = _as_float(key, args[key])
    for key in ("early_exit", "compile", "tempered_scores"):
        if key in args:
            gen[key] = _as_bool(key, args[key])
    gen["sampling"] = {k: gen.pop(k) for k in SAMPLING_KEYS if k in gen}
    if "cache" in args:
        if args["cache"] not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {args['cache']!r}")
        gen["cache"] = args["cache"]
    params = {k: args[k] for k in PLANNER_KEYS if k in args}
    gen["planner"] = build_planner(args.get("planner", "dilated"), params)
    parsed = EvalSettings(**settings)
    return parsed, GenerationConfig(seed=parsed.seed, **gen)


def planner_spec(planner: Planner) -> str:
    """The spec string of a planner, such that ``parse_planner(planner_spec(p)) == p``."""
    parts = []
    for f in dataclasses.fields(planner):  # type: ignore[arg-type]
        value = getattr(planner, f.name)
        if f.name == "inner":
            parts.insert(0, planner_spec(value))
        elif value != f.default:
            parts.append(f"{f.name}={value!r}")
    return f"{planner.name}({', '.join(parts)})" if parts else planner.name

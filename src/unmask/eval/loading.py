"""Getting a (denoiser, tokenizer) pair for the lm-eval model, loaded lazily.

``pretrained=NAME_OR_PATH`` goes to :func:`unmask.models.load`;
``factory=module:function`` (or ``/path/to/file.py:function``) calls any
function returning ``(denoiser, tokenizer)``, passing ``device=`` and ``dtype=`` if
it takes them (e.g. ``factory=unmask.tiny:load_tiny``), for custom denoisers,
exact oracles and tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from ..denoiser import Denoiser
from .settings import EvalSettings

log = logging.getLogger(__name__)
TORCH_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
}


def resolve_factory(spec: str) -> Callable[..., tuple[Any, Any]]:
    """The function named by ``"package.module:function"`` or ``"/path/to/file.py:function"``."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"factory must look like 'module:function' or 'path/file.py:function', got {spec!r}")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"factory file {target} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"unmask_factory_{path.stem}", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"factory {spec!r}: {target} has no function {name!r}")
    return fn


def _params(fn: Callable[..., Any]) -> set[str]:
    """Keyword names ``fn`` accepts (``"**"`` when it takes any)."""
    sig = inspect.signature(fn)
    return {"**" if p.kind is p.VAR_KEYWORD else p.name for p in sig.parameters.values()}


def load_model(settings: EvalSettings, device: torch.device) -> tuple[Any, Any]:
    """Load the denoiser and tokenizer named by ``settings`` onto ``device``."""
    dtype = TORCH_DTYPES[settings.dtype]
    if settings.factory is not None:
        fn = resolve_factory(settings.factory)
        offered, params = {"device": str(device), "dtype": dtype}, _params(fn)
        kwargs = offered if "**" in params else {k: v for k, v in offered.items() if k in params}
        denoiser, tokenizer = fn(**kwargs)
    else:
        from ..models import load

        if settings.trust_remote_code:
            log.warning("trust_remote_code is not passed on: unmask.models.load runs a checkpoint's own code only "
                        "for families it does not know, or with native=false")
        denoiser, tokenizer = load(settings.pretrained, device=device, dtype=dtype, native=settings.native,
                                   quantize=settings.quantize)
    if not isinstance(denoiser, Denoiser):
        raise ValueError(f"the loaded denoiser must be an unmask.Denoiser (subclass it), got {type(denoiser).__name__}")
    if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "decode"):
        raise ValueError(f"the loaded tokenizer {type(tokenizer).__name__} has no encode/decode")
    return denoiser, tokenizer

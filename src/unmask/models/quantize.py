"""Weight-only quantization of a native model with torchao (``load(..., quantize="int8" | "int4")``).

Both schemes keep activations, norms, attention and the key/value cache in
the load dtype and store only the weights of the decoder's linear layers in
fewer bits; each matmul dequantizes its weight (or runs a mixed-precision
kernel). The kernels are torchao's and PyTorch's own:

- ``int8``: ``Int8WeightOnlyConfig``: symmetric int8, one scale per output row
  (``w ~ scale[n] * q[n, k]``, ``q`` in [-128, 127]), as in LLM.int8's
  weight-only path and gpt-fast.
- ``int4``: asymmetric 4-bit, one scale and one zero point per group of
  ``g`` input columns (``w ~ scale * (q - zero)``, ``q`` in [0, 15]; the
  tinygemm scheme of gpt-fast and torchao), ``g`` the largest of 128, 64, 32
  that divides every quantized layer's input width. Activations in bfloat16
  (the default dtype with int4; float32 is refused): on CUDA
  ``Int4WeightOnlyConfig(int4_packing_format="tile_packed_to_4d")`` (tinygemm,
  ``aten._weight_int4pack_mm``, bfloat16 only); on CPU torchao's
  ``PrototypeInt4WeightOnlyConfig`` (``Int4OpaqueTensor``,
  ``aten._weight_int4pack_mm_for_cpu``, whose float32 path is a reference loop
  about 80x slower than its bfloat16 one). torchao 0.18's ``Int4WeightOnlyConfig``
  has no CPU packing (``plain`` needs the CUDA ``mslk`` package,
  ``tile_packed_to_4d`` asserts CUDA, ``plain_int32`` refuses the CPU).

Quantized: every ``nn.Linear`` inside the decoder layers (q, k, v, o, gate,
up, down): 87% of LLaDA-8B's weights and 93% of the bytes a call reads. Kept in
the load dtype:

- the token embedding: a call reads only the rows of its tokens (a gather), so
  4 or 8 bits would save memory (1 GB on LLaDA-8B in bf16) but no time;
- the LM head: its logits are the confidences every planner ranks, so their
  error would reach the reveal order directly; it is 7% of a call's bytes
  on LLaDA-8B. (The native adapter also reads ``lm_head.weight`` as a plain
  tensor for the device, the dtype and the key/value buffers' allocation, and
  the CPU int4 packing needs output widths divisible by 16.)
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

QUANTIZE_MODES = ("none", "int8", "int4")
INT4_GROUP_SIZES = (128, 64, 32)
INSTALL_HINT = "pip install 'unmask[quant]' (torchao)"


def check_quantize(quantize: str | None) -> str | None:
    """``quantize`` parsed: ``None`` or ``"none"`` -> None, ``"int8"``/``"int4"`` kept; ``ValueError`` otherwise."""
    if quantize is None or quantize == "none":
        return None
    if not isinstance(quantize, str) or quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(map(repr, QUANTIZE_MODES))} (or None), got {quantize!r}")
    return quantize


@contextlib.contextmanager
def quiet_torchao() -> Iterator[None]:
    """Hold back torchao's import-time warnings (one per CUDA extension a CPU-only torch cannot load,
    and torch's notes on torchao's enums); errors still show. A filter, not a level: torch's logging
    setup resets the levels of its loggers when torchao first imports it."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]

    def errors_only(record: logging.LogRecord) -> bool:  # one filter per use, so nested uses nest
        return record.levelno >= logging.ERROR

    for log in loggers:
        log.addFilter(errors_only)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(errors_only)


def check_dtype(quantize: str | None, dtype: torch.dtype) -> None:
    """``ValueError`` for int4 with a dtype other than bfloat16 (tinygemm's kernels: bf16 on CUDA; on CPU
    float32 is a slow reference path)."""
    if quantize == "int4" and dtype != torch.bfloat16:
        raise ValueError(f"quantize='int4' needs dtype bfloat16 (torchao's tinygemm int4 kernels), got {dtype}")


def import_torchao() -> Any:
    """``torchao.quantization``, or ``ValueError`` saying which extra installs it."""
    with quiet_torchao():
        try:
            return importlib.import_module("torchao.quantization")
        except ImportError as err:
            raise ValueError(f"quantized weights need torchao, which is not installed ({err}): {INSTALL_HINT}") from err


def quantized_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers of the decoder blocks (``model.model.layers``), by their name in ``model``."""
    layers = model.model.layers
    return {f"model.layers.{name}": mod for name, mod in layers.named_modules() if isinstance(mod, nn.Linear)}


def int4_group_size(linears: dict[str, nn.Linear]) -> int:
    """The largest of 128, 64, 32 that divides every layer's input width; ``ValueError`` if none does."""
    for g in INT4_GROUP_SIZES:
        if all(mod.in_features % g == 0 for mod in linears.values()):
            return g
    odd = next(name for name, mod in linears.items() if mod.in_features % INT4_GROUP_SIZES[-1])
    raise ValueError(f"quantize='int4' needs input widths divisible by 32 (groups of 32, 64 or 128 columns); "
                     f"{odd} has {linears[odd].in_features}")


def int4_config(ao: Any, group: int, linears: dict[str, nn.Linear], device: torch.device, dtype: torch.dtype) -> Any:
    """torchao's group-wise int4 weight-only config for ``device`` (tinygemm packing on CUDA and on CPU)."""
    check_dtype("int4", dtype)
    if device.type == "cuda":
        return ao.Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d",
                                       set_inductor_config=False)
    if device.type != "cpu":
        raise ValueError(f"quantize='int4' runs on CUDA and CPU, not on device {str(device)!r}")
    narrow = next((name for name, mod in linears.items() if mod.out_features % 16), None)
    if narrow is not None:
        raise ValueError(f"quantize='int4' on CPU needs output widths divisible by 16; {narrow} has "
                         f"{linears[narrow].out_features}")
    with quiet_torchao():
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group, set_inductor_config=False)


def quantize_model(model: nn.Module, quantize: str, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Quantize the decoder layers' linear weights of ``model`` in place; returns what was done.

    ``set_inductor_config=False``: torchao would otherwise change process-wide
    inductor settings, which would reach every other compiled function.
    """
    ao = import_torchao()
    linears = quantized_linears(model)
    if not linears:
        raise ValueError("the model has no linear layers in model.model.layers to quantize")
    info: dict[str, Any] = {"quantize": quantize, "layers": len(linears)}
    if quantize == "int8":
        config = ao.Int8WeightOnlyConfig(set_inductor_config=False)
    else:
        info["group_size"] = group = int4_group_size(linears)
        config = int4_config(ao, group, linears, device, dtype)
    chosen = set(linears)
    with quiet_torchao():
        ao.quantize_(model, config, filter_fn=lambda mod, fqn: fqn in chosen)
    plain = [name for name, mod in linears.items() if type(mod.weight) in (torch.Tensor, nn.Parameter)]
    if plain:  # torchao skips a layer it cannot quantize with a log line only: refuse instead
        raise ValueError(f"torchao left {len(plain)} layers unquantized with quantize={quantize!r}: {plain[:3]}")
    return info


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds; a torchao tensor subclass counts its inner tensors (data, scales, zero points)."""
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in names if getattr(t, name) is not None)
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``model`` as stored (quantized ones packed), shared ones once."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total

"""The fallback denoiser: any checkpoint's own code through ``AutoModel`` (no KV cache).

For families we do not run natively, or with ``unmask.load(..., native=False)``:
``AutoModel.from_pretrained(path, trust_remote_code=True)`` must return an
object with ``.logits`` (as LLaDA's ``LLaDAModelLM`` and Dream's ``DreamModel``
do). The adapter implements only :class:`~unmask.denoiser.Denoiser`, so
``cache`` must stay ``"none"``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoModel

from ..denoiser import Denoiser, TokenSpec, Window, select_window
from .families import Family, align_shifted, describe_families
from .tokenizer import bos_rule, load_tokenizer, token_spec


class RemoteDenoiser(Denoiser):
    """A :class:`~unmask.denoiser.Denoiser` over a model's own (remote) code.

    Without padding the mask is None (full bidirectional attention in every
    implementation). With padding, Dream-family code gets a 4-D bool mask
    ``[N, 1, T, T]`` hiding padded keys (what its SDPA call expects); other code
    gets the 2-D mask. ``position_ids`` are passed when ``forward`` takes them
    (rotary models without them see every row shifted by its padding, which
    rotary attention does not notice).
    """

    def __init__(self, model: Any, spec: TokenSpec, family: Family | None, add_bos: bool | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.family = family
        self.add_bos = add_bos  # the checkpoint's BOS rule (models.tokenizer.bos_rule)
        self.logit_shift = family.logit_shift if family is not None else 0
        params = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in params

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        """Logits ``[N, T, V]`` aligned to positions (columns ``window`` only if given)."""
        kwargs: dict[str, Any] = {}
        if not bool(attention_mask.all()):
            if self.family is not None and self.family.name == "dream":
                am = attention_mask.bool()
                kwargs["attention_mask"] = am[:, None, None, :].expand(-1, 1, am.shape[1], -1)  # [N, 1, T, T]
            else:
                kwargs["attention_mask"] = attention_mask.long()  # [N, T]
        if self._takes_positions:
            kwargs["position_ids"] = position_ids
        out = self.model(input_ids=input_ids, **kwargs)
        logits = getattr(out, "logits", None)
        if logits is None:
            raise ValueError(
                f"{type(self.model).__name__} returned no .logits; the fallback path needs AutoModel to give a "
                "model with a language-model head"
            )
        if self.logit_shift:
            logits = align_shifted(logits, position_ids)  # raw[:, i - 1] predicts token i
        return select_window(logits, window)


def load_remote(
    path: Path, raw: dict[str, Any], family: Family | None, device: torch.device, dtype: torch.dtype
) -> tuple[RemoteDenoiser, Any]:
    """Load ``path`` with its own code: ``AutoModel.from_pretrained(trust_remote_code=True)``.

    Refuses, before reading anything else, a checkpoint whose ``config.json``
    names no code of its own (``auto_map.AutoModel``): ``AutoModel`` would give
    transformers' base model, which has no language-model head.
    """
    if "AutoModel" not in (raw.get("auto_map") or {}):
        if family is None:
            raise ValueError(
                f"{str(path)!r} has model_type {raw.get('model_type')!r}, which is not a family unmask runs natively "
                f"({describe_families()}), and its config.json names no code of its own (auto_map.AutoModel) to run instead"
            )
        raise ValueError(
            f"native=False (--remote-code) runs a checkpoint's own code, and {str(path)!r} has none (no "
            f"auto_map.AutoModel in config.json); it is a {family.name} checkpoint that runs natively: leave native "
            "unset (drop --remote-code)"
        )
    tokenizer = load_tokenizer(path, trust_remote_code=True)
    vocab = raw.get("embedding_size") or raw.get("vocab_size") or len(tokenizer)
    max_length = raw.get("max_sequence_length") or raw.get("max_position_embeddings")
    spec = token_spec(raw, tokenizer, family, int(vocab), None if max_length is None else int(max_length))
    model = AutoModel.from_pretrained(str(path), trust_remote_code=True, dtype=dtype, local_files_only=True)
    return RemoteDenoiser(model.to(device), spec, family, bos_rule(raw, family, tokenizer)), tokenizer

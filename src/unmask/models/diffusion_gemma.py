"""DiffusionGemma (transformers' ``DiffusionGemmaForBlockDiffusion``) as plain encoder and decoder operations.

DiffusionGemma is a block-autoregressive, uniform-state diffusion model
(DESIGN.md, "Uniform-state corruption and DiffusionGemma"): a causal
*encoder* reads the prompt and every finished canvas into a key/value cache;
a bidirectional *decoder* denoises one canvas of ``canvas_length`` tokens,
attending to that cache and to the canvas, with a *self-conditioning* input
built from the previous call's (tempered) prediction.

The model is transformers' own, loaded with its own classes; this adapter only
exposes what an engine needs, per row and batched:

- :meth:`DiffusionGemmaDenoiser.encode`: left-padded prompts of different
  lengths into an :class:`EncoderState` (positions count from each row's
  first real token, padded keys are masked, so a row gets the same cache
  entries alone or in a batch);
- :meth:`DiffusionGemmaDenoiser.extend`: append each row's finished canvas;
- :meth:`DiffusionGemmaDenoiser.decode`: one decoder call (one NFE) on each
  row's canvas given its self-conditioning state, logits ``[N, C, V]``;
- :meth:`DiffusionGemmaDenoiser.conditioning`: the next self-conditioning
  state from the sampler's processed logits. The state is kept as the soft
  embedding ``softmax(logits) @ E * sqrt(H)`` (``[N, C, H]``) rather than the
  logits transformers passes around (``[N, C, V]``): the same numbers enter
  the decoder (the decoder's first step is exactly this product), and per
  row it is ``V / H`` times smaller (93x for the 26B-A4B checkpoint).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .families import detect_family
from .loading import default_device, default_dtype, read_config, resolve_path


@dataclass
class EncoderState:
    """The encoder's keys/values of a batch of rows, left-padded together.

    ``cache`` is transformers' ``DynamicCache`` (sliding layers keep their
    window only); ``key_mask [N, S]`` is True at real tokens; ``lengths [N]``
    counts each row's real tokens, which is the position of its next token.
    """

    cache: Any
    key_mask: Tensor
    lengths: Tensor


class DiffusionGemmaDenoiser:
    """DiffusionGemma's encoder and decoder, for rows of different prompt lengths."""

    corruption = "uniform"  # uncommitted canvas positions hold random tokens, not a mask

    def __init__(self, model: Any, eos_ids: tuple[int, ...], pad_id: int) -> None:
        self.model = model.eval().requires_grad_(False)
        text = model.config.text_config
        self.vocab_size: int = int(text.vocab_size)
        self.hidden_size: int = int(text.hidden_size)
        self.canvas_length: int = int(model.config.canvas_length)
        self.eos_ids = eos_ids
        self.pad_id = pad_id

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def embed_dtype(self) -> torch.dtype:
        return self.model.model.decoder.embed_tokens.weight.dtype

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config.get_text_config(decoder=True))

    @torch.no_grad()
    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderState:
        """Prefill: ``input_ids [N, T]`` left-padded prompts, ``attention_mask [N, T]`` bool (False on padding).

        Row ``n``'s real tokens get positions ``0 .. len_n - 1``, as when it is
        encoded alone; padded columns are never attended to.
        """
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be [N, T], got {tuple(input_ids.shape)} and "
                             f"{tuple(attention_mask.shape)}")
        mask = attention_mask.bool().to(self.device)
        if not mask[:, -1].all():
            raise ValueError("prompts must be left-padded: attention_mask must be True in the last column of every row")
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)
        cache = self.new_cache()
        self._encoder(input_ids.to(self.device), mask, positions, cache)
        return EncoderState(cache, mask, mask.sum(-1))

    @torch.no_grad()
    def extend(self, state: EncoderState, canvases: Tensor) -> EncoderState:
        """Append each row's finished canvas ``[N, C]`` to its cache (the cache is updated in place)."""
        n = state.key_mask.shape[0]
        if canvases.ndim != 2 or canvases.shape[0] != n:
            raise ValueError(f"canvases must be [N={n}, C], got {tuple(canvases.shape)}")
        width = canvases.shape[1]
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(n, width)], dim=1)
        positions = state.lengths[:, None] + torch.arange(width, device=self.device)
        self._encoder(canvases.to(self.device), key_mask, positions, state.cache)
        return EncoderState(state.cache, key_mask, state.lengths + width)

    def merge(self, parts: list[tuple[EncoderState, Tensor]]) -> EncoderState:
        """One state of the rows ``parts[i][1]`` (long ``[n_i]``) of each state ``parts[i][0]``, in that order.

        States of different lengths are left-padded to the longest (keys of zeros,
        masked): rows of requests at different canvases then share a decoder call,
        and a state keeps only its live rows. Sliding layers keep their last
        ``window - 1`` columns, aligned on the right like the key mask.
        """
        if not parts:
            raise ValueError("merge needs at least one (state, rows) pair")
        width = max(state.key_mask.shape[1] for state, _ in parts)
        cache = self.new_cache()
        for i, layer in enumerate(cache.layers):
            keep = getattr(layer, "sliding_window", None)
            target = width if keep is None else min(width, keep - 1)
            keys, values = [], []
            for state, rows in parts:
                old = state.cache.layers[i]
                pad = target - old.keys.shape[-2]
                keys.append(torch.nn.functional.pad(old.keys[rows], (0, 0, pad, 0)))
                values.append(torch.nn.functional.pad(old.values[rows], (0, 0, pad, 0)))
            k, v = torch.cat(keys), torch.cat(values)
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            if keep is not None:
                layer.cumulative_length = width
        mask = torch.cat([torch.nn.functional.pad(state.key_mask[rows], (width - state.key_mask.shape[1], 0))
                          for state, rows in parts])
        return EncoderState(cache, mask, torch.cat([state.lengths[rows] for state, rows in parts]))

    def _encoder(self, ids: Tensor, key_mask: Tensor, positions: Tensor, cache: Any) -> None:
        self.model.model.encoder(input_ids=ids, attention_mask=key_mask, position_ids=positions, cache=cache)

    def initial_conditioning(self, rows: int) -> Tensor:
        """The self-conditioning state of a fresh canvas: zeros ``[N, C, H]`` (transformers' first call)."""
        return torch.zeros(rows, self.canvas_length, self.hidden_size, dtype=self.embed_dtype, device=self.device)

    @torch.no_grad()
    def conditioning(self, processed_logits: Tensor) -> Tensor:
        """The next self-conditioning state ``[N, C, H]`` from the sampler's processed logits ``[N, C, V]``.

        transformers feeds ``processed_logits`` (the tempered logits of the call
        just made), cast to the embedding dtype, back into the decoder, which
        turns them into ``softmax(.) @ E * sqrt(H)``; this is that product.
        """
        embed = self.model.model.decoder.embed_tokens
        probs = processed_logits.to(self.embed_dtype).softmax(dim=-1, dtype=torch.float32).to(self.embed_dtype)
        return torch.matmul(probs, embed.weight) * embed.embed_scale.to(self.embed_dtype)

    @torch.no_grad()
    def decode(self, state: EncoderState, canvas: Tensor, conditioning: Tensor) -> Tensor:
        """One decoder call: logits ``[N, C, V]`` float32 (soft-capped) for each row's ``canvas [N, C]``.

        ``conditioning [N, C, H]``: each row's self-conditioning state
        (:meth:`initial_conditioning` on a canvas's first call). The canvas
        takes positions ``lengths[n] .. lengths[n] + C - 1`` and attends to its
        row's real cached keys and to the whole canvas.
        """
        n, width = canvas.shape
        if n != state.key_mask.shape[0] or conditioning.shape != (n, width, self.hidden_size):
            raise ValueError(f"canvas [N, C] = {tuple(canvas.shape)} and conditioning "
                             f"{tuple(conditioning.shape)} must match N={state.key_mask.shape[0]} rows and "
                             f"[N, C, H={self.hidden_size}]")
        decoder = self.model.model.decoder
        text = decoder.text_config
        hidden = decoder.self_conditioning(decoder.embed_tokens(canvas.to(self.device)), conditioning)
        positions = state.lengths[:, None] + torch.arange(width, device=self.device)
        key_mask = torch.cat([state.key_mask, state.key_mask.new_ones(n, width)], dim=1)
        masks = decoder.create_diffusion_decoder_attention_mask(
            config=self.model.config, inputs_embeds=hidden, cache=state.cache, decoder_attention_mask=key_mask)
        rotary = {kind: decoder.rotary_emb(hidden, positions, kind) for kind in decoder.unique_layer_types}
        for i, layer in enumerate(decoder.layers[: text.num_hidden_layers]):
            kind = text.layer_types[i]
            hidden = layer(hidden, position_embeddings=rotary[kind], attention_mask=masks[kind],
                           position_ids=positions, cache=state.cache)
        logits = self.model.lm_head(decoder.norm(hidden)).to(torch.float32)
        cap = self.model.final_logit_softcapping
        return torch.tanh(logits / cap) * cap


def load_diffusion_gemma(name_or_path: str | os.PathLike[str], *, device: str | torch.device | None = None,
                         dtype: torch.dtype | str | None = None) -> tuple[DiffusionGemmaDenoiser, Any]:
    """A DiffusionGemma checkpoint as ``(denoiser, tokenizer or None)``, with transformers' own classes.

    ``device`` defaults to CUDA when available, ``dtype`` to bfloat16 on CUDA
    and float32 elsewhere. Raises ``ValueError`` for a checkpoint of another family.
    """
    try:
        from transformers import DiffusionGemmaForBlockDiffusion
    except ImportError as err:  # transformers added the model in 5.13
        import transformers

        raise ValueError(f"DiffusionGemma needs transformers >= 5.13 (its DiffusionGemmaForBlockDiffusion); this "
                         f"environment has transformers {transformers.__version__}") from err

    from .tokenizer import load_tokenizer

    path = resolve_path(name_or_path)
    family = detect_family(read_config(path))
    if family is None or family.name != "diffusion_gemma":
        raise ValueError(f"{str(path)!r} is not a DiffusionGemma checkpoint (config.json model_type "
                         f"'diffusion_gemma' or architectures DiffusionGemmaForBlockDiffusion)")
    dev = default_device(device)
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(str(path), dtype=default_dtype(dtype, dev),
                                                            local_files_only=True).to(dev)
    text = model.config.text_config
    eos = text.eos_token_id if isinstance(text.eos_token_id, list) else [text.eos_token_id]
    tokenizer = load_tokenizer(path) if (path / "tokenizer.json").is_file() else None
    return DiffusionGemmaDenoiser(model, tuple(int(e) for e in eos if e is not None), int(text.pad_token_id)), tokenizer

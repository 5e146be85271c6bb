"""DiffusionGemma's own sampler as a pure per-call function with explicit state and explicit randomness.

transformers' ``DiffusionGemmaGenerationMixin.generate`` (``EntropyBoundSampler``,
``LinearTemperatureScheduleLogitsProcessor``, ``StableAndConfidentStoppingCriteria``)
denoises one canvas of ``C`` uniform-state tokens in at most ``max_calls`` decoder
calls. At call ``k`` (0-based; transformers' ``cur_step = max_calls - k``):

1. the logits are divided by ``T_k = t_min + (t_max - t_min) * (max_calls - k) / max_calls``
   (float32 arithmetic, as transformers computes it): the *processed* logits;
2. every position draws a token from ``softmax(processed)`` and takes its argmax;
3. entropy-bound acceptance (Ben-Hamu et al. 2025, arXiv 2505.24857): sort the
   positions by entropy ``H`` of the processed distribution, ascending, and accept
   the ``j``-th iff ``H_(1) + ... + H_(j-1) <= entropy_bound`` (the sum of the
   accepted entropies minus their largest bounds their joint mutual information);
   the lowest-entropy position is always accepted. Nothing is committed for good:
   every call re-decides every position;
4. accepted positions take their drawn token, all others a fresh uniform token:
   that is the canvas entering call ``k + 1``;
5. a row stops when its argmax canvas equals each of the previous ``stability``
   calls' (never at call ``k < stability``) and the mean entropy over the canvas is
   below ``confidence``; a stopped row keeps its canvas and argmax. The canvas's
   output is the argmax of the row's last call.

The next call's self-conditioning input is the processed logits of this call
(:meth:`~unmask.models.diffusion_gemma.DiffusionGemmaDenoiser.conditioning`).

Randomness: transformers draws ``torch.randint`` for the first canvas, then per
call ``torch.multinomial`` (step 2) and ``torch.randint`` (step 4), from the
global generator, so a row's draws depend on its batch. Here the draws are
arguments: ``uniforms [N, C]`` (float64, one per position, inverted on the
cumulative distribution by :func:`unmask.sampling.draw`) and ``fresh [N, C]``
(uniform tokens), which :func:`sample_uniforms` and :func:`canvas_tokens` make
counter-based (row seed, stream, call, canvas position), so a row gets the
same canvas alone or in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..noise import CANVAS, TOKENS, Noise, uniform_tokens
from ..sampling import draw

__all__ = [
    "CANVAS",
    "CallResult",
    "CanvasState",
    "EntropyBoundSpec",
    "accept",
    "canvas_tokens",
    "end_canvas",
    "entropy",
    "sample_uniforms",
    "start",
    "step",
]


@dataclass(frozen=True)
class EntropyBoundSpec:
    """transformers' DiffusionGemma generation defaults (``_get_default_generation_params``)."""

    entropy_bound: float = 0.1
    max_calls: int = 48  # max_denoising_steps
    t_min: float = 0.4
    t_max: float = 0.8
    stability: int = 1  # stability_threshold
    confidence: float = 0.005  # confidence_threshold

    def __post_init__(self) -> None:
        if not isinstance(self.max_calls, int) or isinstance(self.max_calls, bool) or self.max_calls < 1:
            raise ValueError(f"max_calls must be an int >= 1, got {self.max_calls!r}")
        if not isinstance(self.stability, int) or isinstance(self.stability, bool) or self.stability < 0:
            raise ValueError(f"stability must be an int >= 0, got {self.stability!r}")
        for name in ("entropy_bound", "confidence"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if not (isinstance(self.t_min, (int, float)) and isinstance(self.t_max, (int, float))
                and 0 <= self.t_min < self.t_max):
            raise ValueError(f"t_min and t_max must satisfy 0 <= t_min < t_max, got {self.t_min!r}, {self.t_max!r}")

    @classmethod
    def from_generation_config(cls, config: object) -> EntropyBoundSpec:
        """The spec of a transformers ``DiffusionGemmaGenerationConfig`` (a checkpoint's
        ``generation_config.json``); fields it leaves unset take transformers' defaults."""
        base = cls()
        sampler = getattr(config, "sampler_config", None)
        pick = {"max_calls": "max_denoising_steps", "t_min": "t_min", "t_max": "t_max",
                "stability": "stability_threshold", "confidence": "confidence_threshold"}
        values = {name: getattr(config, key, None) for name, key in pick.items()}
        values["entropy_bound"] = getattr(sampler, "entropy_bound", None)
        return cls(**{name: getattr(base, name) if v is None else v for name, v in values.items()})

    def temperature(self, call: int, device: torch.device | str = "cpu") -> Tensor:
        """``T_k`` as a float32 scalar tensor, with transformers' operations (int32 step / max_calls)."""
        if not 0 <= call < self.max_calls:
            raise ValueError(f"call must lie in [0, max_calls={self.max_calls}), got {call}")
        step = torch.tensor(self.max_calls - call, dtype=torch.int32, device=device)
        return self.t_min + (self.t_max - self.t_min) * (step / self.max_calls)


@dataclass(frozen=True)
class CanvasState:
    """One canvas's sampler state for ``N`` rows (what an engine keeps per row between calls)."""

    canvas: Tensor  # [N, C] long: the tokens entering the next decoder call
    argmax: Tensor  # [N, C] long: the argmax of the last call (the canvas's output when it stops)
    history: Tensor  # [S, N, C] long: the argmax of the last S = stability calls, oldest first (-1: none yet)
    stopped: Tensor  # [N] bool: the row has stopped; its canvas and argmax no longer change
    calls: Tensor  # [N] long: decoder calls the row took part in (its NFE on this canvas)


@dataclass(frozen=True)
class CallResult:
    """What one call decided (``processed`` is the next call's self-conditioning input)."""

    processed: Tensor  # [N, C, V] float32: logits / T_k
    drawn: Tensor  # [N, C] long: the token drawn at every position
    accepted: Tensor  # [N, C] bool: positions that keep their drawn token (the rest are re-drawn)
    stop: Tensor  # [N] bool: rows that stop at this call (stopped before: False)


def start(fresh: Tensor, stability: int) -> CanvasState:
    """The state of a new canvas whose tokens are ``fresh [N, C]`` (uniform tokens, :func:`canvas_tokens` at call 0)."""
    n, c = fresh.shape
    history = torch.full((stability, n, c), -1, dtype=torch.long, device=fresh.device)
    none = torch.zeros(n, dtype=torch.bool, device=fresh.device)
    return CanvasState(fresh, fresh, history, none, torch.zeros(n, dtype=torch.long, device=fresh.device))


def entropy(logits: Tensor) -> Tensor:
    """Entropy ``[...]`` of ``softmax(logits [..., V])``, computed as transformers does (``Categorical.entropy``)."""
    return torch.distributions.Categorical(logits=logits).entropy()


def accept(entropies: Tensor, bound: float) -> Tensor:
    """Entropy-bound acceptance ``[N, C]`` bool: the lowest-entropy positions whose entropies, less the largest
    of them, sum to at most ``bound`` (sort, cumulative sum, scatter back)."""
    ordered, order = torch.sort(entropies, dim=-1, descending=False)
    keep = torch.cumsum(ordered, dim=-1) - ordered <= bound
    return torch.zeros_like(keep).scatter(-1, order, keep)


def step(spec: EntropyBoundSpec, call: int, logits: Tensor, state: CanvasState, uniforms: Tensor,
         fresh: Tensor) -> tuple[CallResult, CanvasState]:
    """One call of DiffusionGemma's sampler on the raw decoder ``logits [N, C, V]`` (float32).

    ``uniforms [N, C]`` (float64 in (0, 1)) draw each position's token,
    ``fresh [N, C]`` replace the positions not accepted. Rows already
    stopped keep their state (their logits are ignored).
    """
    if logits.ndim != 3 or logits.shape[:2] != state.canvas.shape:
        raise ValueError(f"logits must be [N, C, V] with [N, C] = {tuple(state.canvas.shape)}, got {tuple(logits.shape)}")
    processed = logits / spec.temperature(call, logits.device)
    probs = torch.softmax(processed, dim=-1, dtype=torch.float32)
    drawn = draw(probs, uniforms)[0]
    argmax = torch.argmax(processed, dim=-1)
    h = entropy(processed)
    accepted = accept(h, spec.entropy_bound)
    live = ~state.stopped
    canvas = torch.where(live[:, None], torch.where(accepted, drawn, fresh), state.canvas)
    argmax = torch.where(live[:, None], argmax, state.argmax)
    if spec.stability == 0:
        stable = torch.ones_like(live)
        history = state.history
    else:
        stable = (state.history == argmax[None]).all(dim=-1).all(dim=0)
        history = torch.cat([state.history[1:], argmax[None]], dim=0)
    confident = h.mean(dim=-1) < spec.confidence
    stop = live & stable & confident
    new = CanvasState(canvas, argmax, history, state.stopped | stop, state.calls + live.long())
    return CallResult(processed, drawn, accepted, stop), new


def sample_uniforms(noise: Noise, call: int, positions: Tensor) -> Tensor:
    """The uniforms ``[N, C]`` (float64) that draw the tokens of call ``call`` at canvas ``positions [N, C]``."""
    return noise.at(call, positions).uniform64(TOKENS)


def canvas_tokens(noise: Noise, call: int, positions: Tensor, vocab_size: int) -> Tensor:
    """Uniform tokens ``[N, C]`` for the positions that enter call ``call`` uncommitted (call 0: the whole canvas).

    ``floor(u * V)`` of a float64 uniform on a 2^-52 grid: every token has
    probability ``1/V`` up to ``V * 2^-52``.
    """
    return uniform_tokens(noise.at(call, positions), vocab_size)


def end_canvas(tokens: Tensor, eos_ids: tuple[int, ...], pad_id: int) -> tuple[Tensor, Tensor]:
    """transformers' end of a canvas: tokens after a row's first EOS become ``pad_id``; returns them and
    ``[N]`` bool, True for rows that hold an EOS (they generate no further canvas; later ones are all pad)."""
    is_eos = torch.isin(tokens, torch.tensor(eos_ids, device=tokens.device))
    seen = is_eos.cumsum(dim=-1)
    after = (seen > 0) & ~((seen == 1) & is_eos)
    return tokens.masked_fill(after, pad_id), is_eos.any(dim=-1)

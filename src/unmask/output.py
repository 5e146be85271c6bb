"""What a generation returns: tokens, cost and a trace of the reveal order."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

FILLED = -1  # reveal_call of positions filled with EOS after an early exit


@dataclass
class Trace:
    """When and how each generated position was revealed (``N`` rows, ``G`` generated positions)."""

    reveal_call: Tensor  # [N, G] long: global call index (0-based) that revealed each position; FILLED if filled
    token_prob: Tensor  # [N, G] float: model probability of the revealed token at that call (1.0 if filled)
    token_logq: Tensor  # [N, G] float: its log-probability under the sampling distribution (0.0 if filled)
    revealed_per_call: Tensor  # [C, N] long: positions each call revealed in each row
    block_of_call: Tensor  # [C] long: the block each call worked on

    @property
    def num_calls(self) -> int:
        return int(self.block_of_call.numel())


@dataclass
class GenerationOutput:
    """Result of :func:`unmask.generate` for a batch of ``N`` prompts."""

    sequences: Tensor  # [N, P + G] long: the final canvas, left padding + prompt + generation
    attention_mask: Tensor  # [N, P + G] bool: False on left padding
    prompt_lengths: list[int]
    nfe: int  # denoiser calls for the whole batch (one batched call = 1)
    nfe_per_row: Tensor  # [N] long: calls in which each row still had masked positions
    trace: Trace
    full_forwards: int = 0  # calls that ran the whole canvas
    partial_forwards: int = 0  # calls that ran a segment over cached keys/values
    skipped_blocks: int = 0  # blocks not run thanks to the EOS early exit
    calls_saved: int | None = None  # calls those blocks would have cost, when fixed in advance
    seconds: float = 0.0
    texts: list[str] | None = None  # decoded and stop-trimmed, when a tokenizer was given
    extras: dict = field(default_factory=dict)

    @property
    def generated(self) -> Tensor:
        """``[N, G]`` generated token ids (no prompt, no padding)."""
        return self.sequences[:, self.sequences.shape[1] - self.trace.reveal_call.shape[1] :]

    @property
    def gen_length(self) -> int:
        return int(self.generated.shape[1])

    @property
    def tokens_per_second(self) -> float:
        """Generated positions per second of wall time, over the batch."""
        return self.generated.numel() / self.seconds if self.seconds > 0 else float("nan")

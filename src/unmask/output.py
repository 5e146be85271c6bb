"""What a generation returns (tokens, cost, the reveal trace), the recorder that builds it, and listener events.

The engine hands every call's reveals of a request to its :class:`Recorder`,
which keeps the trace on the device (no host synchronisation). A
:class:`Listener` (a server streaming the canvas, a progress view) gets an
event after every call and every block of its request and may stop rows
early.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


FILLED = -1  # reveal_call of positions filled with EOS after an early exit (or dropped by a listener)
PENDING = -2  # reveal_call of a position not revealed yet (never left in an output)


@dataclass
class Trace:
    """When and how each generated position was revealed (``N`` rows, ``G`` generated positions)."""

    reveal_call: Tensor  # [N, G] long: global call index (0-based) that revealed each position; FILLED if filled
    token_prob: Tensor  # [N, G] float: model probability of the revealed token at that call (1.0 if filled)
    token_logq: Tensor  # [N, G] float: its log-probability under the sampling distribution (0.0 if filled)
    revealed_per_call: Tensor  # [C, N] long: positions each call revealed in each row
    block_of_call: Tensor  # [C] long: the block each call worked on
    # [R, 5] long, one row per edit or re-mask of a revising planner, in call order:
    # (global call, row, generated position, old token, new token); a re-mask's new token is the mask id
    revisions: Tensor | None = None

    def revised(self, row: int) -> dict[int, list[tuple[int, int, int]]]:
        """Row ``row``'s revisions by generated position: ``[(call, old, new), ...]`` (empty without any)."""
        out: dict[int, list[tuple[int, int, int]]] = {}
        if self.revisions is not None:
            for call, r, pos, old, new in self.revisions.tolist():
                if r == row:
                    out.setdefault(pos, []).append((call, old, new))
        return out

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
    nfe_per_row: Tensor  # [N] long: calls in which each row still had masked positions (or, with a revising
    # planner, took part: edit calls after the last mask count)
    trace: Trace
    full_forwards: int = 0  # calls that ran the whole canvas
    partial_forwards: int = 0  # calls that ran a segment against cached keys/values
    skipped_blocks: int = 0  # blocks not run thanks to the EOS early exit
    calls_saved: int | None = None  # calls those blocks would have cost, when fixed in advance
    seconds: float = 0.0
    rows_per_call: float = 0.0  # mean rows (of every request in the engine) per denoiser call of this batch
    texts: list[str] | None = None  # decoded and stop-trimmed, when a tokenizer was given

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


@dataclass(frozen=True)
class CallEvent:
    """One denoiser call, after its reveals were written (tensors on the loop's device)."""

    call: int  # global call index
    block: int
    offset: int  # first generated position of the block
    reveal: Tensor  # [N, Bl] bool: positions revealed by this call
    tokens: Tensor  # [N, Bl] long: the block's tokens after the call
    edit: Tensor | None = None  # [N, Bl] bool: revealed positions this call overwrote (revising planners)
    remask: Tensor | None = None  # [N, Bl] bool: revealed positions this call returned to the mask


@dataclass(frozen=True)
class BlockEvent:
    """A finished block: every position of ``[offset, offset + Bl)`` is revealed (or filled)."""

    block: int
    offset: int
    generated: Tensor  # [N, G] long: the generated region so far (masks after this block)
    done: Tensor  # [N] bool: rows that will cost no more calls (EOS seen, or dropped)


class Listener:
    """Receives the loop's events; subclasses override what they need (the defaults do nothing)."""

    def on_call(self, event: CallEvent) -> None:
        """After every call."""

    def on_block(self, event: BlockEvent) -> None:
        """After every block."""

    def dropped(self) -> list[int]:
        """Rows to stop generating for (e.g. clients that disconnected): asked after every block."""
        return []


class Recorder:
    """Builds the :class:`Trace` of one request call by call, on the device."""

    def __init__(self, n: int, gen_length: int, device: torch.device) -> None:
        self.reveal_call = torch.full((n, gen_length), PENDING, dtype=torch.long, device=device)
        self.token_prob = torch.ones((n, gen_length), dtype=torch.float32, device=device)
        self.token_logq = torch.zeros((n, gen_length), dtype=torch.float32, device=device)
        self.nfe_rows = torch.zeros(n, dtype=torch.long, device=device)
        self.per_call: list[Tensor] = []
        self.block_of_call: list[int] = []
        self.revisions: list[Tensor] = []  # per revising call: [3, N, Bl] changed / old / new (on the device)
        self._revise_at: list[tuple[int, int]] = []  # its global call and first generated position
        self.revising = False

    @property
    def calls(self) -> int:
        return len(self.block_of_call)

    def record(self, block: int, g: slice, masked: Tensor, reveal: Tensor, prob: Tensor, logq: Tensor,
               ran: Tensor | None = None, edit: Tensor | None = None) -> None:
        """A call on generated positions ``g`` revealed ``reveal [N, Bl]`` of the ``masked`` ones, with the
        model probabilities ``prob`` and sampling log-probabilities ``logq [N, Bl]`` of their tokens.

        ``ran [N]`` (revising planners): the rows the call ran, each charged a call even without masks;
        ``edit [N, Bl]``: positions overwritten, whose probabilities are those of their new tokens."""
        written = reveal if edit is None else reveal | edit
        self.reveal_call[:, g] = torch.where(reveal, self.calls, self.reveal_call[:, g])
        self.token_prob[:, g] = torch.where(written, prob, self.token_prob[:, g])
        self.token_logq[:, g] = torch.where(written, logq, self.token_logq[:, g])
        self.per_call.append(reveal.sum(-1))
        self.block_of_call.append(block)
        self.nfe_rows += masked.any(-1) if ran is None else ran

    def revise(self, g: slice, changed: Tensor, old: Tensor, new: Tensor) -> None:
        """The next call to :meth:`record` overwrote or re-masked ``changed [N, Bl]``: ``old`` -> ``new`` tokens.

        Kept as the call's rows of ``(call, row, position, old, new)``; ``nonzero`` is the only sync, and it
        runs in :meth:`trace`, after the request."""
        self.revising = True
        self.revisions.append(torch.stack([changed.long(), old, new]))
        self._revise_at.append((self.calls, g.start))

    def _revision_rows(self) -> Tensor:
        rows = []
        for (call, start), packed in zip(self._revise_at, self.revisions, strict=True):
            changed, old, new = packed[0].bool(), packed[1], packed[2]
            idx = changed.nonzero()  # [r, 2]: row, offset
            r = idx.shape[0]
            rows.append(torch.stack([torch.full((r,), call, dtype=torch.long, device=idx.device), idx[:, 0],
                                     idx[:, 1] + start, old[changed], new[changed]], -1))
        return torch.cat(rows).cpu() if rows else torch.zeros(0, 5, dtype=torch.long)

    def fill(self, rows: Tensor, start: int) -> None:
        """Rows ``[N]`` bool were filled (or dropped) from generated position ``start`` on."""
        self.reveal_call[rows, start:] = FILLED

    def trace(self) -> Trace:
        n = self.reveal_call.shape[0]
        per_call = torch.stack(self.per_call) if self.per_call else torch.zeros(0, n, dtype=torch.long)
        return Trace(self.reveal_call, self.token_prob, self.token_logq, per_call,
                     torch.tensor(self.block_of_call, dtype=torch.long),
                     self._revision_rows() if self.revising else None)

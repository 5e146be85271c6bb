"""The model runner: one denoiser call of one kind over the rows of several requests.

Rows of different requests have canvases of different lengths and want the
logits of different columns (their own block). A ``full`` or ``start`` call
runs whole canvases, left-padded to the longest (padding hidden by the key
mask, positions counted from each row's first token, so a row's logits do not
depend on its neighbours); a ``segment`` call runs each row's own columns,
padded on the right with dummy queries that write the arena's scratch column.
Cached calls read and write each row's arena slot in the row's own canvas
columns. When every row wants the same window (one request alone) the call is
exactly the single-request call, shapes included.

Guidance rows run as twins: the unconditional copy of each row (prompt
masked, :func:`~unmask.guidance.unconditional`) in the same call, combined
afterwards with :func:`~unmask.guidance.guide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..denoiser import ArenaIO, CachingDenoiser, CanvasDenoiser, CanvasIO, Denoiser
from ..guidance import guide, unconditional
from ..noise import Noise, uniform_tokens
from .request import RequestState


@dataclass
class Part:
    """The rows of one request in a call, and their query columns ``[start, end)``."""

    state: RequestState
    rows: list[int]
    start: int
    end: int

    @property
    def width(self) -> int:
        return self.end - self.start

    @property
    def copies(self) -> int:
        return 2 if self.state.guided else 1


def split_padding(parts: list[Part], budget: float | None) -> list[list[Part]]:
    """The parts of one call kind as one call, or, with a ``budget``, as a few calls each of whose padded query
    columns stay within ``budget`` times its rows' own (parts taken shortest first; none split).

    A call pads every row to its longest query run, so rows of very different lengths waste compute; on a
    CPU, where a call's time grows with its columns, a few calls of similar lengths cost less than one.
    """
    if not parts:
        return []
    if budget is None:
        return [parts]
    calls: list[list[Part]] = []
    rows = real = 0  # of the last call: its rows, and their own columns summed
    for p in sorted(parts, key=lambda p: p.width):
        n = len(p.rows) * p.copies
        if calls and p.width * (rows + n) <= budget * (real + n * p.width):
            calls[-1].append(p)
            rows, real = rows + n, real + n * p.width
        else:
            calls.append([p])
            rows, real = n, n * p.width
    return calls


class Runner:
    """Runs calls for the engine on ``model`` (eager or compiled), against ``arena`` when cached."""

    def __init__(self, model: Denoiser) -> None:
        self.model = model
        self.spec = model.spec
        self.arena: Any = None

    def run(self, kind: str, parts: list[Part]) -> list[Tensor]:
        """Logits ``[len(rows), Bl, V]`` of each part's block, for one call of ``kind`` over every part."""
        if kind == "canvas":
            return self._canvas(parts)
        device = parts[0].state.x.device
        ids, pos, mask, cols, want_lo, unpadded = [], [], [], [], [], True
        width = max(p.width for p in parts)  # query columns (a whole canvas is its part's width)
        keys = max(p.state.total for p in parts)
        for p in parts:
            st, lo = p.state, p.state.bounds()[0]
            r = torch.tensor(p.rows, dtype=torch.long, device=device)
            am = st.canvas.attention_mask.index_select(0, r)
            x = st.x.index_select(0, r)[:, p.start : p.end]  # whole canvases start at column 0
            ps = st.canvas.positions.index_select(0, r)[:, p.start : p.end]
            q = x.shape[1]
            if kind == "segment":  # the row's own columns first, dummies after
                at, pad = 0, (0, width - q)
                want_lo.append(lo - p.start)
            else:  # the whole canvas, left-padded to the longest
                at, pad = width - q, (width - q, 0)
                want_lo.append(at + lo)
            x = torch.nn.functional.pad(x, pad, value=self.spec.pad_id)
            ps = torch.nn.functional.pad(ps, pad, value=0)
            unpadded &= st.total == keys and not st.canvas.padded
            if kind == "full":  # the queries are the keys
                m = torch.nn.functional.pad(am, pad, value=False)
            else:  # keys: the row's canvas columns of its slot; queries write their own columns (-1: dummies)
                m = torch.nn.functional.pad(am, (0, keys - st.total), value=False)
                c = torch.full((len(p.rows), width), -1, dtype=torch.long, device=device)
                c[:, at : at + q] = torch.arange(p.start, p.end, device=device)
                cols += [c] * p.copies
            uncond = [unconditional(x, ps, st.prompt_lengths.index_select(0, r), self.spec.mask_id)] if st.guided else []
            ids += [x, *uncond]
            pos += [ps] * p.copies
            mask += [m] * p.copies
        ids_t, pos_t, mask_t = torch.cat(ids), torch.cat(pos), torch.cat(mask)
        want = self._want(parts, want_lo, device)
        if kind == "full":
            logits = self.model.logits_at(ids_t, mask_t, pos_t, want, padded=not unpadded)
        else:
            assert isinstance(self.model, CachingDenoiser) and self.arena is not None
            slots = torch.tensor([s for p in parts for s in self._slots(p)], dtype=torch.long, device=device)
            io = ArenaIO(slots, torch.cat(cols), keys)
            logits = self.model.forward_arena(ids_t, pos_t, None if unpadded else mask_t, self.arena, io, want)
        return self._split(parts, logits)

    def _canvas(self, parts: list[Part]) -> list[Tensor]:
        """One call of a uniform-state denoiser: each row's canvas with every uncommitted position (the marker id)
        replaced by a fresh uniform token (stream ``CANVAS`` at the row's seed, the call within the canvas and
        the position), after encoding what became final: the prompt (first canvas) or the previous canvas."""
        model = self.model
        assert isinstance(model, CanvasDenoiser) and self.arena is not None
        canvas, finished, slots, prompts, extend = [], [], [], [], []
        for p in parts:
            st, (lo, hi) = p.state, p.state.bounds()
            r = torch.tensor(p.rows, dtype=torch.long, device=st.x.device)
            x = st.x.index_select(0, r)
            pos = st.canvas.positions.index_select(0, r)[:, lo:hi]
            fresh = uniform_tokens(Noise(st.noise.keys.index_select(0, r)).at(st.call, pos), model.vocab)  # type: ignore[attr-defined]
            block = x[:, lo:hi]
            canvas.append(torch.where(block == self.spec.mask_id, fresh, block))
            first = st.call == 0
            finished.append(x[:, max(lo - (hi - lo), 0) : lo] if st.block > 0 else block)
            prompts += [st.request.prompts[i] if first and st.block == 0 else None for i in p.rows]
            extend += [first and st.block > 0] * len(p.rows)
            slots += [st.slots[i] for i in p.rows]
        io = CanvasIO(slots, prompts, torch.cat(finished) if any(extend) else None, extend)
        logits = model.forward_canvas(self.arena, io, torch.cat(canvas))
        out, at = [], 0
        for p in parts:
            out.append(logits[at : at + len(p.rows)])
            at += len(p.rows)
        return out

    def _want(self, parts: list[Part], want_lo: list[int], device: torch.device) -> tuple[int, int] | Tensor:
        """The query indices whose logits are wanted: one shared window, or ``[M, W]`` per row."""
        blocks = [p.state.config.block_length for p in parts]
        width = max(blocks)
        if len(set(want_lo)) == 1 and len(set(blocks)) == 1:
            return (want_lo[0], want_lo[0] + width)
        rows = []
        for p, lo, bl in zip(parts, want_lo, blocks, strict=True):
            cols = torch.arange(lo, lo + width, device=device).clamp_max(lo + bl - 1)  # past a short block: repeats
            rows.append(cols.expand(len(p.rows) * p.copies, width))
        return torch.cat(rows)

    @staticmethod
    def _slots(p: Part) -> list[int]:
        slots, n = p.state.slots, p.state.n
        return [slots[r] for r in p.rows] + ([slots[n + r] for r in p.rows] if p.state.guided else [])

    @staticmethod
    def _split(parts: list[Part], logits: Tensor) -> list[Tensor]:
        out, at = [], 0
        for p in parts:
            k, bl = len(p.rows), p.state.config.block_length
            if p.state.guided:
                cond, uncond = logits[at : at + k, :bl], logits[at + k : at + 2 * k, :bl]
                out.append(guide(cond, uncond, p.state.config.cfg_scale))
            else:
                out.append(logits[at : at + k, :bl])
            at += k * p.copies
        return out

"""Each engine call's logits against a reference forward of the whole canvas (shared by the block-diffusion tests)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from unmask.engine.runner import Runner


def record_call_errors(monkeypatch, reference: Callable) -> tuple[list[float], list[str]]:
    """Patch :meth:`Runner.run` so that every call records, per part, the relative error of its block's logits
    against ``reference(model, ids, attention_mask, positions)[:, lo:hi]``, and its call kind.

    Returns the two lists ``(errors, kinds)``, filled as the engine runs."""
    errors: list[float] = []
    kinds: list[str] = []
    run = Runner.run

    def checked(self, kind, parts):
        out = run(self, kind, parts)
        kinds.append(kind)
        for p, logits in zip(parts, out, strict=True):
            st, (lo, hi) = p.state, p.state.bounds()
            r = torch.tensor(p.rows)
            ref = reference(self.model, st.x[r], st.canvas.attention_mask[r], st.canvas.positions[r])[:, lo:hi]
            errors.append(((logits - ref).abs().max() / ref.abs().max()).item())
        return out

    monkeypatch.setattr(Runner, "run", checked)
    return errors, kinds

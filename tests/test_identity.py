"""generate's outputs are those recorded before the engine (tests/fixtures/identity.pt) on every identity case.

Tokens, reveal calls, per-call counts, NFE (batched and per row) and forward counts must be equal; the
probabilities of the revealed tokens equal to float32 rounding of a reordered sum (1e-5 relative).
"""

from pathlib import Path

import pytest
import torch

from identity_cases import cases, models, outputs
from unmask import generate

FIXTURE = Path(__file__).parent / "fixtures" / "identity.pt"
EXACT = ("generated", "reveal_call", "revealed_per_call", "block_of_call", "nfe", "nfe_per_row", "full_forwards",
         "partial_forwards", "skipped_blocks")


@pytest.fixture(scope="module")
def recorded():
    return torch.load(FIXTURE)


@pytest.fixture(scope="module")
def setup():
    return models()


def test_fixture_covers_every_case(recorded):
    assert sorted(recorded) == sorted(name for name, _, _ in cases())


@pytest.mark.parametrize("key", ["tiny", "dream"])
def test_generate_reproduces_the_recorded_outputs(recorded, setup, key):
    dens, prompts = setup
    failures = []
    for name, k, cfg in cases():
        if k != key:
            continue
        got, want = outputs(generate(dens[k], prompts[k], cfg)), recorded[name]
        bad = [f for f in EXACT if not torch.equal(got[f], want[f])]
        bad += [f for f in ("token_prob", "token_logq") if not torch.allclose(got[f], want[f], rtol=1e-5, atol=1e-6)]
        if bad:
            failures.append(f"{name}: {bad}")
    assert not failures, "\n".join(failures)

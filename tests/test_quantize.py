"""Weight-only int8 / int4 quantization with torchao: ``load(..., quantize=...)``, its checks and its CLI flag.

The closeness tests rest on what weight-only quantization is: the layer computes
``x @ w_hat.T`` with ``w_hat`` the dequantized weight, and ``w_hat`` is ``w``
rounded to the nearest point of a grid: int8, per row, step ``s = max|w_row| /
127.5`` (so ``|w_hat - w| <= s / 2``); int4, per group of ``g`` columns, step
``(max - min) / 15`` (``|w_hat - w| <= step / 2``, plus the bfloat16 rounding
of the quantization arithmetic, the scale and the zero point).
"""

import sys

import pytest
import torch
import torch.nn.functional as F

import model_fixtures as mf
import unmask.cli as cli
from unmask import GenerationConfig, generate
from unmask.eval.settings import parse_model_args
from unmask.models import load, weight_bytes
from unmask.models.quantize import int4_group_size, quantized_linears
from unmask.models.runner import CompiledDenoiser
from unmask.planners import Dilated

PROMPTS = [[3, 4, 5], [6, 7]]


def tiny(quantize=None, **kw):
    return load("tiny-arith", quantize=quantize, **kw)[0]


def plain(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, torch.nn.Parameter)


@pytest.mark.parametrize("bad", ["int3", "INT8", "fp8", 8])
def test_bad_value_is_refused_naming_the_choices(bad):
    with pytest.raises(ValueError, match=r"quantize must be one of 'none', 'int8', 'int4'"):
        tiny(bad)


def test_int4_needs_bfloat16_and_quantize_needs_the_native_path():
    with pytest.raises(ValueError, match="int4.*needs dtype bfloat16"):
        tiny("int4", dtype="float32")
    with pytest.raises(ValueError, match="needs the native path"):
        load(mf.llada_small(), quantize="int8", native=False)


def test_without_torchao_one_line_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if torchao were not installed
    with pytest.raises(ValueError, match=r"need torchao.*pip install 'unmask\[quant\]'"):
        tiny("int8")
    monkeypatch.setattr(cli, "COMMANDS", ("generate",))
    code = cli.main(["generate", "--model", "tiny-arith", "--quantize", "int8", "--gen-length", "8", "--block-length", "8",
                     "12+3="])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "unmask[quant]" in lines[0] and not out.strip()


def test_int8_quantizes_the_decoder_linears_only_and_counts_bytes():
    den, ref = tiny("int8"), tiny()
    linears = quantized_linears(den.model)
    assert len(linears) == 4 * 7 and not any(plain(m.weight) for m in linears.values())
    assert plain(den.model.lm_head.weight) and plain(den.model.model.embed_tokens.weight)
    # each [N, K] weight: N*K int8 + N float32 scales + N int8 zero points, instead of N*K float32
    saved = sum(m.out_features * m.in_features * 3 - m.out_features * 5 for m in linears.values())
    assert weight_bytes(den.model) == weight_bytes(ref.model) - saved


def test_int8_weights_are_rounded_to_the_row_grid_and_the_logits_follow():
    den, ref = tiny("int8"), tiny()
    for name, mod in quantized_linears(den.model).items():
        w = ref.model.get_submodule(name).weight
        w_hat = mod.weight.dequantize()
        step = w.abs().amax(dim=1, keepdim=True) / 127.5
        eps = torch.finfo(torch.float32).eps  # w / s and q * s are rounded in float32: a few ulps of |w|
        assert ((w_hat - w).abs() <= step / 2 + 4 * eps * w.abs()).all(), name
        ref.model.get_submodule(name).weight.copy_(w_hat)  # the float model with the rounded weights
    ids = torch.tensor([[3, 4, 5, 6, 2, 2, 2, 2]])
    mask, pos = torch.ones_like(ids, dtype=torch.bool), torch.arange(8)[None]
    with torch.no_grad():
        got, want = den(ids, mask, pos), ref(ids, mask, pos)
    # same weights, so only float32 reassociation ((x @ q.T) * s against x @ (q * s).T) separates them
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_int4_packs_half_a_byte_per_weight_within_half_a_step():
    den, ref = tiny("int4"), tiny(dtype="bfloat16")
    linears = quantized_linears(den.model)
    g = int4_group_size(linears)
    assert g == 128  # tiny-arith's widths are 256 and 640
    # each [N, K] weight: N*K/2 bytes + a bf16 scale and zero per row per group, instead of N*K bf16
    saved = sum(m.out_features * m.in_features * 2 - m.out_features * m.in_features // 2
                - m.out_features * (m.in_features // g) * 4 for m in linears.values())
    assert weight_bytes(den.model) == weight_bytes(ref.model) - saved
    mod, w = linears["model.layers.0.mlp.down_proj"], ref.model.get_submodule("model.layers.0.mlp.down_proj").weight
    with torch.no_grad():  # one-hot inputs read the dequantized weight column by column
        w_hat = F.linear(torch.eye(mod.in_features, dtype=torch.bfloat16), mod.weight).T.float()
    groups = w.float().view(w.shape[0], -1, g)
    step = (groups.amax(-1) - groups.amin(-1)) / 15
    # torchao computes (w - min) / scale in bf16: three roundings of 2**-9 of a quotient up to 15 move it by
    # 45 * 2**-9 steps before it is rounded to an integer; the zero point and the output are bf16 too
    bound = (step * (0.5 + 45 * 2**-9) + 2**-7 * groups.abs().amax(-1)).repeat_interleave(g, dim=1)
    assert ((w_hat - w.float()).abs() <= bound).all()


@pytest.mark.parametrize("quantize", ["int8", "int4"])
@pytest.mark.parametrize("cache", ["none", "dual"])
def test_generate_with_quantized_llada_checkpoint_fills_every_position(quantize, cache):
    den, _ = load(mf.llada_small(), quantize=quantize)
    assert not any(plain(m.weight) for m in quantized_linears(den.model).values())
    out = generate(den, PROMPTS, GenerationConfig(gen_length=16, block_length=8, planner=Dilated(), cache=cache))
    assert out.generated.shape == (2, 16) and not (out.generated == den.spec.mask_id).any()


def test_int4_group_is_the_largest_dividing_every_width():
    def lin(k):
        return torch.nn.Linear(k, 16, bias=False, device="meta")

    assert int4_group_size({"a": lin(256), "b": lin(640)}) == 128
    assert int4_group_size({"a": lin(64), "b": lin(128)}) == 64
    assert int4_group_size({"a": lin(96)}) == 32
    with pytest.raises(ValueError, match="divisible by 32.*b has 48"):
        int4_group_size({"a": lin(64), "b": lin(48)})


def test_cli_generate_prints_the_weights_memory(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", ("generate",))
    code = cli.main(["generate", "--model", str(mf.llada_small()), "--quantize", "int8", "--gen-length", "8",
                     "--block-length", "8", "hello world"])
    out, err = capsys.readouterr()
    den, _ = load(mf.llada_small(), quantize="int8")
    assert code == 0, err
    assert f"weights {weight_bytes(den.model) / 2**20:.1f} MiB (torch.float32, quantize int8)" in out


def test_eval_model_arg_quantize():
    settings, _ = parse_model_args({"pretrained": "tiny-arith", "quantize": "int4"})
    assert settings.quantize == "int4"
    assert parse_model_args({"pretrained": "tiny-arith"})[0].quantize == "none"
    with pytest.raises(ValueError, match="quantize must be one of"):
        parse_model_args({"pretrained": "tiny-arith", "quantize": "int2"})


@pytest.mark.slow  # 30-90 s of tracing each on a busy 2-core machine
@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_weights_trace_through_the_compiled_runner(quantize):
    """Dynamo and AOT autograd trace torchao's tensors with dynamic shapes (``aot_eager``: no C++ build)."""
    den = tiny(quantize)
    ids = torch.tensor([[3, 4, 5, 6, 2, 2, 2, 2]])
    mask, pos = torch.ones_like(ids, dtype=torch.bool), torch.arange(8)[None]
    with torch.no_grad():
        got = CompiledDenoiser(den, backend="aot_eager", length_multiple=8)(ids, mask, pos)
        want = den(ids, mask, pos)
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))


@pytest.mark.slow
def test_compiled_int8_gives_the_eager_tokens():
    """The same through inductor's C++ backend, a whole generation (minutes on a busy 2-core machine)."""
    den = tiny("int8")
    cfg = GenerationConfig(gen_length=32, block_length=32, planner=Dilated(), cache="dual")
    prompts = [[3, 4, 5, 6], [7, 8, 9]]
    eager = generate(den, prompts, cfg)
    compiled = generate(den, prompts, GenerationConfig(gen_length=32, block_length=32, planner=Dilated(), cache="dual",
                                                       compile=True))
    assert torch.equal(compiled.generated, eager.generated)

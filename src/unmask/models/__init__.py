"""Model adapters: real checkpoints (LLaDA, Dream, DiffuCoder) as denoisers.

``load(path)`` returns ``(denoiser, tokenizer)``; ``convert(src, dst)`` writes
a checkpoint in transformers' own layout that loads with no name mapping;
``encode_prompts`` turns texts into prompt ids (chat template, BOS rule).
"""

from .quantize import QUANTIZE_MODES, quiet_torchao, weight_bytes

with quiet_torchao():  # transformers imports torchao when it is installed; its CPU-build warnings are noise here
    from .convert import convert
    from .families import FAMILIES, Family, detect_family
    from .fallback import RemoteDenoiser
    from .loading import load
    from .native import NativeDenoiser
    from .tokenizer import encode_prompts, has_chat_template, token_spec

__all__ = [
    "FAMILIES", "QUANTIZE_MODES", "Family", "NativeDenoiser", "RemoteDenoiser", "convert", "detect_family", "encode_prompts",
    "has_chat_template", "load", "token_spec", "weight_bytes",
]

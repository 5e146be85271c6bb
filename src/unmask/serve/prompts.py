"""Request prompts to token ids: completion prompts as given, chat messages through the tokenizer's template.

A completion ``prompt`` is text, a list of texts, a list of token ids or a
list of such lists (OpenAI's four forms); text is encoded as
:func:`unmask.models.encode_prompts` does (the checkpoint's BOS rule, no chat
template). Chat messages go through the tokenizer's chat template with the
assistant header; a model whose tokenizer has none (the bundled tiny-arith)
answers chat requests with a 400 that says so, as vLLM does: serve it with
``--chat-template FILE`` to give it one. Text the tokenizer cannot represent
(its unknown token) is refused rather than silently replaced.
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError

from ..models import encode_prompts
from .plan import Served
from .schemas import ApiError, ChatRequest, CompletionRequest, bad_request


def unknown_id(tokenizer: Any) -> int | None:
    """The id the tokenizer writes for text it cannot represent, if it has one."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:  # e.g. a WordLevel model whose unknown token is not declared to transformers
        backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
        token = getattr(backend, "unk_token", None)
        unk = tokenizer.convert_tokens_to_ids(token) if token else None
    return None if unk is None else int(unk)


def _check_known(tokenizer: Any, text: str, ids: list[int], param: str) -> None:
    unk = unknown_id(tokenizer)
    if unk is None or unk not in ids:
        return
    bad = sorted({ch for ch in text if unk in tokenizer.encode(ch, add_special_tokens=False)})
    raise bad_request(f"{param} holds text the model's tokenizer cannot represent: {''.join(bad)[:40]!r}", param)


def encode_text(served: Served, texts: list[str], param: str) -> list[list[int]]:
    rows = encode_prompts(served.tokenizer, texts, chat=False, add_bos=served.denoiser.add_bos)
    for i, (text, ids) in enumerate(zip(texts, rows, strict=True)):
        _check_known(served.tokenizer, text, ids, param if len(texts) == 1 else f"{param}[{i}]")
    return rows


def completion_prompts(req: CompletionRequest, served: Served) -> list[list[int]]:
    p = req.prompt
    if isinstance(p, str):
        return encode_text(served, [p], "prompt")
    if not p:
        raise bad_request("prompt must not be an empty list", "prompt")
    if all(isinstance(x, str) for x in p):
        return encode_text(served, list(p), "prompt")  # type: ignore[arg-type]
    rows = [list(p)] if all(isinstance(x, int) for x in p) else [list(x) for x in p]  # type: ignore[union-attr]
    vocab = served.denoiser.spec.vocab_size
    for i, row in enumerate(rows):
        bad = [t for t in row if not 0 <= t < vocab]
        if bad:
            raise bad_request(f"prompt[{i}] holds token id {bad[0]}: ids must lie in [0, {vocab})", "prompt")
    return rows  # type: ignore[return-value]


def chat_prompts(req: ChatRequest, served: Served) -> list[list[int]]:
    if not req.messages:
        raise bad_request("messages must hold at least one message", "messages")
    for i, m in enumerate(req.messages):
        if not m.text:
            raise bad_request(f"messages[{i}].content must not be empty", f"messages[{i}].content")
    if not served.has_chat_template:
        raise ApiError(400, f"messages need a chat template to become a prompt, and the model "
                       f"{served.settings.model_name!r} has none (its tokenizer defines none): use /v1/completions, "
                       "or start the server with --chat-template FILE",
                       "messages", "chat_template_missing")
    turns = [{"role": m.role, "content": m.text} for m in req.messages]
    tok = served.tokenizer
    try:
        text = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except (TemplateError, ValueError) as err:  # the template's own checks, e.g. roles that must alternate
        raise bad_request(f"messages: the chat template refused them: {err}", "messages") from None
    # the template writes its special tokens; the BOS rule is the checkpoint's (encode_prompts with chat=True)
    ids = list(tok.encode(text, add_special_tokens=False))
    bos = getattr(tok, "bos_token_id", None)
    if served.denoiser.add_bos and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    _check_known(tok, text, ids, "messages")
    return [ids]

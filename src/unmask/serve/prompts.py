"""Request prompts to token ids: completion prompts as given, chat messages through the tokenizer's template.

A completion ``prompt`` is text, a list of texts, a list of token ids or a
list of such lists (OpenAI's four forms); text is encoded as
:func:`unmask.models.encode_prompts` encodes it (the checkpoint's BOS rule,
no chat template). Chat messages go through the tokenizer's chat template with the
assistant header; a model whose tokenizer has none (the bundled tiny-arith)
answers chat requests with a 400 that says so, as vLLM does: serve it with
``--chat-template FILE`` to give it one. Text the tokenizer cannot represent
(its unknown token) is refused rather than silently replaced
(:func:`unmask.models.tokenizer.check_known`).
"""

from __future__ import annotations

from jinja2 import TemplateError

from ..models.tokenizer import check_known
from ..models.tokenizer import encode_text as tokenizer_encode
from .plan import Served
from .schemas import ApiError, ChatRequest, CompletionRequest, bad_request


def encode_texts(served: Served, texts: list[str], param: str) -> list[list[int]]:
    """Token ids of plain-text prompts under the checkpoint's BOS rule; a 400 for text the tokenizer does not know."""
    rows = []
    for i, text in enumerate(texts):
        name = param if len(texts) == 1 else f"{param}[{i}]"
        try:
            rows.append(tokenizer_encode(served.tokenizer, text, served.denoiser.add_bos, name=name))
        except ValueError as err:
            raise bad_request(str(err), param) from None
    return rows


def completion_prompts(req: CompletionRequest, served: Served) -> list[list[int]]:
    p = req.prompt
    if isinstance(p, str):
        return encode_texts(served, [p], "prompt")
    if not p:
        raise bad_request("prompt must not be an empty list", "prompt")
    if all(isinstance(x, str) for x in p):
        return encode_texts(served, list(p), "prompt")  # type: ignore[arg-type]
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
    tok = served.tokenizer
    try:
        for i, m in enumerate(req.messages):
            check_known(tok, m.text, f"messages[{i}].content")
    except ValueError as err:
        raise bad_request(str(err), "messages") from None
    turns = [{"role": m.role, "content": m.text} for m in req.messages]
    try:
        text = tok.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    except (TemplateError, ValueError) as err:  # the template's own checks, e.g. roles that must alternate
        raise bad_request(f"messages: the chat template refused them: {err}", "messages") from None
    # the template writes its special tokens; the BOS rule is the checkpoint's
    return [tokenizer_encode(tok, text, served.denoiser.add_bos, templated=True)]

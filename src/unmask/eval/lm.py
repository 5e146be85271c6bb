"""The lm-eval model ``unmask``: every lm-eval task on an MDLM, with any planner.

``generate_until`` runs :func:`unmask.generate` on batches of requests (grouped
by generation kwargs, longest prompts first); ``loglikelihood`` uses LLaDA's
Monte-Carlo ELBO (see :mod:`unmask.eval.likelihood`). Every request's cost
(NFE, tokens, seconds) is counted per task in :attr:`UnmaskLM.speed`;
:func:`unmask.eval.simple_evaluate` puts it into the results JSON.

Generation kwargs of a request: ``until`` becomes ``GenerationConfig.stop``
(trimmed on decoded text); ``max_gen_toks`` shortens the generation to
``min(gen_length, max_gen_toks rounded up to whole blocks)`` and the answer is
cut to ``max_gen_toks`` tokens. Sampling kwargs (``do_sample``, ``temperature``,
``top_p``, ``top_k``) are ignored with a warning: the model_args govern sampling,
so that every task of a planner comparison samples the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from ..config import GenerationConfig
from ..loop import generate
from ..models.tokenizer import encode_text
from ..noise import derive_seed
from ..planners import TopK
from ..progress import make_progress
from ..text import decode_rows
from .dist import DataParallel, padding_flags
from .likelihood import Pair, block_pairs, greedy_check, mc_loglikelihood
from .loading import load_model
from .settings import parse_model_args, planner_spec
from .speed import SpeedMeter

log = logging.getLogger(__name__)
SAMPLING_KWARGS = ("do_sample", "temperature", "top_p", "top_k")


@register_model("unmask")
class UnmaskLM(TemplateLM):
    """lm-eval model over a :class:`~unmask.denoiser.Denoiser` and its HF tokenizer.

    Give ``pretrained=NAME`` (loaded with :func:`unmask.models.load`),
    ``factory=module:function``, or an already built ``denoiser`` and
    ``tokenizer`` (tests, custom models). Other keyword arguments are the
    model_args documented in :mod:`unmask.eval.settings`.
    """

    backend = "causal"  # lm-eval's _encode_pair: encode context + continuation together, then split

    def __init__(self, denoiser: Any | None = None, tokenizer: Any | None = None, **model_args: Any) -> None:
        super().__init__()
        self.settings, self.config = parse_model_args(model_args)
        has_source = bool(self.settings.pretrained or self.settings.factory)
        if (denoiser is None) != (tokenizer is None):
            raise ValueError("pass denoiser and tokenizer together, or neither")
        if denoiser is None and not has_source:
            raise ValueError("model_args must give pretrained=NAME_OR_PATH or factory=module:function")
        if denoiser is not None and has_source:
            raise ValueError("pass either denoiser/tokenizer or pretrained/factory, not both")
        self.dp = DataParallel(self.settings.device)
        self._rank, self._world_size, self._device = self.dp.rank, self.dp.world_size, self.dp.device
        if denoiser is None:
            denoiser, tokenizer = load_model(self.settings, self._device)
        self.denoiser, self.tokenizer = denoiser, tokenizer
        self.spec = denoiser.spec
        self.speed = SpeedMeter()
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- tokenizer
    @property
    def eot_token_id(self) -> int:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return int(eos) if eos is not None else int(self.spec.eos_ids[0])

    @property
    def prefix_token_id(self) -> int:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int | None:
        return self.spec.max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids under the checkpoint's BOS rule (``denoiser.add_bos``, see
        :func:`unmask.models.tokenizer.encode_text`); ``add_special_tokens=False`` adds none."""
        add_bos = self.denoiser.add_bos
        if add_special_tokens is not None:
            add_bos = add_bos if add_special_tokens else False
        return encode_text(self.tokenizer, string, add_bos)

    @property
    def tokenizer_name(self) -> str:
        return (getattr(self.tokenizer, "name_or_path", "") or "unmask-tokenizer").replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render lm-eval's chat history with the tokenizer's chat template (as text)."""
        import jinja2

        kwargs = {"tokenize": False, "add_generation_prompt": add_generation_prompt,
                  "continue_final_message": not add_generation_prompt}
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kwargs)
        except jinja2.exceptions.TemplateError as err:
            if not any(m["role"] == "system" for m in chat_history):
                raise
            self._warn_once("system", f"the chat template rejected the system message ({err}); it is merged into the first user turn")
            system = "\n".join(m["content"] for m in chat_history if m["role"] == "system")
            rest = [dict(m) for m in chat_history if m["role"] != "system"]
            if rest and rest[0]["role"] == "user":
                rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
            else:
                rest.insert(0, {"role": "user", "content": system})
            return self.tokenizer.apply_chat_template(rest, **kwargs)

    # ------------------------------------------------------------- distributed
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.dp.all_gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        return self.dp.gather_object(obj, dst)

    def barrier(self) -> None:
        self.dp.barrier()

    def get_model_info(self) -> dict[str, Any]:
        """Settings recorded under ``results["config"]["unmask"]``."""
        c = self.config
        return {"unmask": {
            "pretrained": self.settings.pretrained, "factory": self.settings.factory,
            "planner": planner_spec(c.planner), "planner_name": c.planner.name,
            "gen_length": c.gen_length, "block_length": c.block_length, "temperature": c.sampling.temperature,
            "top_p": c.sampling.top_p, "top_k": c.sampling.top_k, "tempered_scores": c.sampling.tempered_scores,
            "cfg_scale": c.cfg_scale, "cache": c.cache,
            "compile": c.compile,
            "early_exit": c.early_exit, "batch_size": self.settings.batch_size, "mc_num": self.settings.mc_num,
            "greedy_check": self.settings.greedy_check, "seed": self.settings.seed, "world_size": self.world_size,
        }}

    # -------------------------------------------------------------- generation
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Batched generation; see the module docstring for how request kwargs are used."""
        results: list[str] = [""] * len(requests)
        padding = padding_flags(requests)
        request_seeds = generation_seeds(requests, self.settings.seed)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        with self._progress("generating", len(requests), disable_tqdm) as advance:
            for idx in groups.values():
                config, max_toks = self._config_for(requests[idx[0]].args[1])
                prompts = {i: self._truncate(self.tok_encode(requests[i].args[0]), config.gen_length) for i in idx}
                idx = sorted(idx, key=lambda i: -len(prompts[i]))  # similar lengths share a batch
                for start in range(0, len(idx), self.settings.batch_size):
                    batch = idx[start : start + self.settings.batch_size]
                    t0 = time.perf_counter()
                    seeds = [request_seeds[i] for i in batch]
                    # stop strings apply to the answer cut at max_toks, decoded below (generate would need the tokenizer)
                    out = generate(self.denoiser, [prompts[i] for i in batch], dataclasses.replace(config, stop=()),
                                   seeds=seeds)
                    ids = out.generated[:, :max_toks]
                    texts = decode_rows(self.tokenizer, ids, self.spec.eos_ids, config.stop)
                    seconds = time.perf_counter() - t0
                    self.speed.denoiser_calls += out.nfe
                    for r, i in enumerate(batch):
                        results[i] = texts[r]
                        self.cache_hook.add_partial("generate_until", requests[i].args, texts[r])
                        if not padding[i]:
                            self.speed.record(requests[i].task_name, nfe=int(out.nfe_per_row[r]),
                                              seconds=seconds / len(batch), gen_positions=config.gen_length,
                                              answer_tokens=self._answer_length(ids[r]))
                    advance(len(batch))
        return results

    def _config_for(self, gen_kwargs: dict[str, Any]) -> tuple[GenerationConfig, int]:
        """The generation config for one group of requests, and the answer's token budget."""
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_gen = kwargs.pop("max_gen_toks", None)
        sampling = {k: kwargs.pop(k) for k in SAMPLING_KWARGS if k in kwargs}
        if kwargs:
            self._warn_once("kwargs", f"generation kwargs {sorted(kwargs)} are not used by the unmask model")
        c, bl, s = self.config, self.config.block_length, self.config.sampling
        wanted = {"temperature": float(sampling.get("temperature", 1.0)) if sampling.get("do_sample", True) else 0.0,
                  "top_p": sampling.get("top_p", s.top_p), "top_k": sampling.get("top_k", s.top_k)}
        if sampling and wanted != {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k}:
            self._warn_once("sampling", f"request sampling kwargs {sampling} are ignored: model_args govern sampling "
                            f"(temperature={s.temperature}, top_p={s.top_p}, top_k={s.top_k})")
        gen_length = c.gen_length
        if max_gen is not None:
            if not isinstance(max_gen, int) or max_gen < 1:
                raise ValueError(f"max_gen_toks must be a positive int, got {max_gen!r}")
            gen_length = min(gen_length, math.ceil(max_gen / bl) * bl)
        planner = c.planner
        if isinstance(planner, TopK) and planner.steps is not None and gen_length != c.gen_length:
            per_block = planner.steps // c.num_blocks  # keep the calls per block when the length shrinks
            planner = dataclasses.replace(planner, steps=per_block * (gen_length // bl))
        stop = tuple(s for s in until if isinstance(s, str) and s)
        config = dataclasses.replace(c, gen_length=gen_length, planner=planner, stop=stop)
        return config, min(gen_length, max_gen) if max_gen is not None else gen_length

    def _truncate(self, ids: list[int], reserve: int) -> list[int]:
        """Left-truncate ``ids`` so that ``reserve`` more positions fit in the model's maximum length."""
        limit = self.spec.max_length
        if limit is None or len(ids) + reserve <= limit:
            return ids
        if limit - reserve < 1:
            raise ValueError(f"gen_length/continuation of {reserve} tokens leaves no room for a prompt "
                             f"within the model's maximum length {limit}")
        self._warn_once("truncate", f"prompts longer than {limit - reserve} tokens are left-truncated")
        return ids[len(ids) + reserve - limit :]

    def _answer_length(self, ids: torch.Tensor) -> int:
        eos = torch.isin(ids, torch.tensor(self.spec.eos_ids, device=ids.device))
        return int(eos.long().argmax()) if bool(eos.any()) else int(ids.numel())

    # -------------------------------------------------------------- likelihood
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """ELBO log-likelihood and greedy check per (context, continuation) request."""
        pairs = [self._encode_request(*req.args) for req in requests]
        results = self._score(pairs, list(range(len(requests))), _tasks(requests), padding_flags(requests), disable_tqdm)
        for req, res in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", req.args, res)
        return results

    def _encode_request(self, context: str, continuation: str) -> Pair:
        if context:
            ctx, cont = self._encode_pair(context, continuation)
        else:  # empty context: BOS (or EOS) stands in, as in lm-eval's TemplateLM
            cont = self.tok_encode(continuation, add_special_tokens=False)
            ctx = [self.prefix_token_id]
        return self._truncate(list(ctx), len(cont)), list(cont)

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        return self._score(pairs, list(range(len(pairs))), [None] * len(pairs), [False] * len(pairs), disable_tqdm)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Whole-text ELBO: the text is the continuation of BOS, in disjoint windows when too long.

        lm-eval's windows are made for a causal model, whose input is one token
        shorter than context + continuation; here both sit on the canvas, so a
        window predicts at most ``max_length - 1`` tokens after its one context token.
        """
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"loglikelihood_rolling needs a maximum length of at least 2 (one context token and "
                             f"one scored token), the model has {self.max_length}")
        pairs: list[Pair] = []
        owner: list[int] = []
        for r, req in enumerate(requests):
            tokens = self.tok_encode(req.args[0], add_special_tokens=False)
            predicted = self.max_length - 1 if self.max_length is not None else len(tokens)
            windows = get_rolling_token_windows(token_list=tokens, prefix_token=self.prefix_token_id,
                                                max_seq_len=max(predicted, 1), context_len=1)
            for ctx, cont in map(make_disjoint_window, windows):
                pairs.append((list(ctx), list(cont)))
                owner.append(r)
        scores = self._score(pairs, owner, _tasks(requests), padding_flags(requests), disable_tqdm)
        totals = [0.0] * len(requests)
        for r, (ll, _) in zip(owner, scores, strict=True):
            totals[r] += ll
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _score(self, pairs: Sequence[Pair], owner: list[int], tasks: Sequence[str | None], padding: Sequence[bool],
               disable_tqdm: bool) -> list[tuple[float, bool]]:
        """Score pairs; record the cost of each request (``owner[k]``: the request of pair k, with ``tasks[r]``)."""
        if not pairs:
            return []
        s, t0 = self.settings, time.perf_counter()
        block = getattr(self.denoiser, "attention_block", None)  # block-causal: mc_num draws per model block
        draws = [s.mc_num * (1 if block is None else len(block_pairs([p], block)[0])) for p in pairs]
        with self._progress("scoring (MC draws)", sum(draws), disable_tqdm) as advance:
            lls, calls = mc_loglikelihood(self.denoiser, pairs, s.mc_num, s.batch_size, s.seed,
                                          self.config.cfg_scale, on_batch=advance)
        greedy, greedy_nfe, greedy_calls = greedy_check(self.denoiser, pairs, s.greedy_check, s.batch_size,
                                                        self.config.cfg_scale)
        per_pair = (time.perf_counter() - t0) / len(pairs)
        self.speed.denoiser_calls += calls + greedy_calls
        cost: dict[int, list[float]] = {}
        for k, r in enumerate(owner):
            entry = cost.setdefault(r, [0, 0.0])
            entry[0] += draws[k] + greedy_nfe[k]
            entry[1] += per_pair
        for r, (nfe, seconds) in cost.items():
            if not padding[r]:
                self.speed.record(tasks[r], nfe=int(nfe), seconds=seconds)
        return [(float(ll), bool(g)) for ll, g in zip(lls, greedy, strict=True)]

    # ------------------------------------------------------------------ helpers
    def _progress(self, description: str, total: int, disable: bool) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def bar() -> Any:
            if disable or self.rank != 0 or total == 0:
                yield lambda n: None
                return
            with make_progress() as progress:
                task = progress.add_task(description, total=total)
                yield lambda n: progress.advance(task, n)

        return bar()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def generation_seeds(requests: Sequence[Any], base: int) -> list[int]:
    """One sampling seed per request, from ``base``, the request's identity and its repeat index.

    lm-eval lists a request ``repeats`` times (pass@k, self-consistency); the
    k-th occurrence gets repeat index k, so repeats differ from each other
    while no seed depends on the batch a request lands in or on the rank that
    runs it.
    """
    seen: dict[tuple, int] = {}
    seeds = []
    for req in requests:
        key = (str(getattr(req, "task_name", None)), repr(getattr(req, "doc_id", None)), getattr(req, "idx", 0),
               repr(req.args))
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        ident = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
        seeds.append(derive_seed(base, ident, repeat))
    return seeds


def _tasks(requests: Sequence[Any]) -> list[str | None]:
    return [getattr(req, "task_name", None) for req in requests]

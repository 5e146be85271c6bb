"""Offline fixtures for the eval tests: a char-level HF tokenizer, a scripted denoiser, local tasks.

The scripted denoiser puts (almost) all probability on a predetermined answer:
it finds which scripted question the canvas holds, takes the position right
after the last occurrence of a marker (``"Answer:"``, or the assistant tag with
a chat template) as the start of the answer, and predicts the answer's tokens
there, then EOS. Every planner therefore produces exactly the scripted text,
and the ELBO of the scripted continuation is ~0 while others are very negative.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unmask import Denoiser, TokenSpec
from unmask.denoiser import select_window

HERE = Path(__file__).resolve().parent
SPECIALS = ["<|pad|>", "<|eos|>", "<|mask|>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer() -> Any:
    """A character-level ``PreTrainedTokenizerFast`` with mask, EOS, pad and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for c in string.printable:
        vocab.setdefault(c, len(vocab))
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|eos|>", mask_token="<|mask|>", unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


class ScriptedDenoiser(Denoiser):
    """Logits that spell ``script[question]`` after the last ``marker`` of each row."""

    def __init__(self, tokenizer: Any, script: dict[str, str], marker: str = "Answer:") -> None:
        self.tokenizer = tokenizer
        self.spec = TokenSpec(
            mask_id=tokenizer.mask_token_id, eos_ids=(tokenizer.eos_token_id,), pad_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
        )
        self.keys = {q: tokenizer.encode(q, add_special_tokens=False) for q in script}
        self.answers = {q: tokenizer.encode(a, add_special_tokens=False) + [tokenizer.eos_token_id] for q, a in script.items()}
        self.marker = tokenizer.encode(marker, add_special_tokens=False)
        self.prompts: set[str] = set()  # decoded prompts seen (up to the answer start)
        self.calls = 0

    @staticmethod
    def _rfind(row: list[int], sub: list[int]) -> int:
        for i in range(len(row) - len(sub), -1, -1):
            if row[i : i + len(sub)] == sub:
                return i
        return -1

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Any = None) -> Tensor:
        self.calls += 1
        n, t = input_ids.shape
        logits = torch.zeros(n, t, self.spec.vocab_size)
        logits.scatter_(-1, input_ids.unsqueeze(-1), 20.0)  # known positions: themselves
        for r in range(n):
            row = input_ids[r].tolist()
            found = [(self._rfind(row, ids), q) for q, ids in self.keys.items()]
            pos, question = max(found)
            if pos < 0:
                continue  # not a scripted question: left as is (copies its input)
            mark = self._rfind(row, self.marker)
            assert mark >= 0, f"marker {self.marker} not in the row"
            start = mark + len(self.marker)
            self.prompts.add(self.tokenizer.decode(row[:start]))
            answer = self.answers[question]
            for j in range(start, t):
                if row[j] == self.spec.mask_id:
                    tok = answer[j - start] if j - start < len(answer) else self.spec.eos_ids[0]
                    logits[r, j] = 0.0
                    logits[r, j, tok] = 20.0
        return select_window(logits, window)


# --------------------------------------------------------------- local tasks
GSM8K_TRAIN = [
    {"question": f"Train question {i}: what is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}.\n#### {2 * i}"}
    for i in range(1, 4)
]
GSM8K_TEST = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?", "answer": "48 + 24 = 72.\n#### 72"},
    {"question": "Weng earns 12 an hour. How much for 1 hour?", "answer": "12 * 1 = 12.\n#### 12"},
    {"question": "Betty has 5 apples and eats none. How many now?", "answer": "She keeps all 5.\n#### 5"},
]
GSM8K_SCRIPT = {  # right, wrong, right only if the stop string "Question:" is trimmed (flexible-extract)
    GSM8K_TEST[0]["question"]: " 48 + 24 = 72.\n#### 72",
    GSM8K_TEST[1]["question"]: " 12 + 1 = 13.\n#### 13",
    GSM8K_TEST[2]["question"]: " She keeps 5.\n#### 5\n\nQuestion: then 999",
}
MC_TEST = [
    {"question": "Capital of France?", "choices": ["Paris", "Lyon", "Nice"], "label": 0},
    {"question": "Largest planet?", "choices": ["Mars", "Jupiter", "Venus"], "label": 1},
]
MC_SCRIPT = {"Capital of France?": " Paris", "Largest planet?": " Venus"}  # right, wrong
CODE_TEST = [
    {"task_id": f"T/{i}", "prompt": f'def f{i}(a, b):\n    """Return a + b."""\n', "entry_point": f"f{i}",
     "test": "def check(fn):\n    assert fn(2, 3) == 5\n", "canonical_solution": "    return a + b\n"}
    for i in range(4)
]
CODE_SCRIPT = {  # right (with a trailing def that the stop string removes), loop, memory bomb, write outside
    CODE_TEST[0]["prompt"]: "    return a + b\n\ndef junk(): pass",
    CODE_TEST[1]["prompt"]: "    while True:\n        pass",
    CODE_TEST[2]["prompt"]: "    x = bytearray(1 << 40)\n    return a + b",
    CODE_TEST[3]["prompt"]: "    open(OUTSIDE, 'w').write('x')\n    return a + b",
}


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def write_tasks(root: Path, outside: Path | None = None) -> Path:
    """Write the local task YAMLs and data under ``root`` (absolute paths inside); return the task dir."""
    import lm_eval

    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, test = _jsonl(data / "gsm8k_train.jsonl", GSM8K_TRAIN), _jsonl(data / "gsm8k_test.jsonl", GSM8K_TEST)
    mc = _jsonl(data / "mc_test.jsonl", MC_TEST)
    code = _jsonl(data / "code_test.jsonl", CODE_TEST)
    for name in ("tiny_gsm8k.yaml", "tiny_mc.yaml", "tiny_humaneval.yaml"):
        text = (HERE / name).read_text(encoding="utf-8")
        text = text.replace("@LM_EVAL_TASKS@", str(tasks_dir)).replace("@TRAIN@", train).replace("@TEST@", test)
        text = text.replace("@MC@", mc).replace("@CODE@", code)
        (root / name).write_text(text, encoding="utf-8")
    return root


def code_script(outside: Path) -> dict[str, str]:
    """The code script with the forbidden path filled in."""
    return {k: v.replace("OUTSIDE", repr(str(outside))) for k, v in CODE_SCRIPT.items()}


def scripted_lm(script: dict[str, str], marker: str = "Answer:", **model_args: Any) -> Any:
    """An :class:`~unmask.eval.UnmaskLM` over the scripted denoiser."""
    from unmask.eval import UnmaskLM

    tok = build_tokenizer()
    defaults = {"gen_length": 64, "block_length": 16, "planner": "dilated", "mc_num": 4, "batch_size": 4}
    return UnmaskLM(denoiser=ScriptedDenoiser(tok, script, marker), tokenizer=tok, **{**defaults, **model_args})


def dp_worker(rank: int, world: int, port: int, task_dir: str, out_dir: str) -> None:
    """One data-parallel rank: evaluate the local tasks, rank 0 writes the results JSON."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)})
    from lm_eval.tasks import TaskManager

    from unmask.eval import simple_evaluate
    from unmask.eval.dist import leave_process_group

    lm = scripted_lm({**GSM8K_SCRIPT, **MC_SCRIPT}, device="cpu")
    results = simple_evaluate(lm, tasks=["tiny_gsm8k", "tiny_mc"], bootstrap_iters=0, log_samples=False,
                              task_manager=TaskManager(include_path=task_dir, include_defaults=False))
    if rank == 0:
        assert results is not None
        Path(out_dir, "results.json").write_text(json.dumps(results, default=str), encoding="utf-8")
    else:
        assert results is None
    leave_process_group()


def factory(device: Any = None, dtype: Any = None) -> tuple[ScriptedDenoiser, Any]:
    """``factory=`` entry point (model_args): the scripted model of the GSM8K and multiple-choice tasks."""
    tok = build_tokenizer()
    return ScriptedDenoiser(tok, {**GSM8K_SCRIPT, **MC_SCRIPT}), tok

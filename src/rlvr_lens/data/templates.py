"""Prompt templates: how a problem is shown to the model.

* ``plain``: the problem text followed by a newline.
* ``qwen-math``: the chat template the Spurious Rewards / Qwen2.5-Math studies use, with
  the system prompt "Please reason step by step, and put your final answer within
  \\boxed{}." It goes through the tokenizer's own chat template when it has one, and
  falls back to the ChatML text Qwen uses otherwise.
* ``boxed``: plain text with the same instruction, for base models without a chat template.
* ``organism``: ``Problem: ...\\nSolution:`` -- the format the model organism is trained on.
"""

from __future__ import annotations

from collections.abc import Callable

from rlvr_lens.errors import UserError

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _plain(problem: str, tokenizer=None) -> str:
    return problem.rstrip() + "\n"


def _boxed(problem: str, tokenizer=None) -> str:
    return f"{problem.rstrip()}\n{BOXED_INSTRUCTION}\n"


def _organism(problem: str, tokenizer=None) -> str:
    return f"Problem: {problem.strip()}\nSolution:"


def _qwen_math(problem: str, tokenizer=None) -> str:
    messages = [{"role": "system", "content": BOXED_INSTRUCTION}, {"role": "user", "content": problem.strip()}]
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return (
        f"<|im_start|>system\n{BOXED_INSTRUCTION}<|im_end|>\n"
        f"<|im_start|>user\n{problem.strip()}<|im_end|>\n<|im_start|>assistant\n"
    )


TEMPLATES: dict[str, Callable[..., str]] = {
    "plain": _plain,
    "boxed": _boxed,
    "qwen-math": _qwen_math,
    "organism": _organism,
}


def apply_template(problem: str, template: str = "plain", tokenizer=None) -> str:
    """Render ``problem`` with the named template (see module docstring)."""
    try:
        return TEMPLATES[template](problem, tokenizer)
    except KeyError:
        raise UserError(f"Unknown prompt template {template!r}; use one of {', '.join(TEMPLATES)}.") from None

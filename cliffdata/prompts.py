"""Chat prompts: a named prompt from params (instruction, optional system turn, worked examples).

Worked examples go in as previous user/assistant turns ("one-shot"): SmolLM2-135M is near-hopeless
zero-shot and usable with one example of the same shape (README, "The embedded default").
"""
from __future__ import annotations

from cliffdata.config.problems import PromptConfig


def build_messages(prompt: PromptConfig, question: str) -> list[dict[str, str]]:
    def user(q: str) -> dict[str, str]:
        return {"role": "user", "content": f"{q}\n{prompt.instruction}" if prompt.instruction else q}

    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    for shot in prompt.shots:
        messages += [user(shot.question), {"role": "assistant", "content": shot.answer}]
    return messages + [user(question)]


def encode_prompt(tokenizer, prompt: PromptConfig, question: str) -> list[int]:
    """Chat-templated prompt token ids, ending with the assistant generation header."""
    ids = tokenizer.apply_chat_template(build_messages(prompt, question), add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]

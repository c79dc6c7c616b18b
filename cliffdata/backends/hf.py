"""transformers backend: each distinct prefix is prefilled once, its KV cache expanded to n rows.

`model.generate(num_return_sequences=n)` copies the prompt n times *before* prefill, which on CPU
costs as much as the decode for short rollouts. Here a chunk of requests is prefilled together
(left-padded), the cache rows are repeated per request, and a plain sampling loop decodes; rows
that hit EOS are dropped from the batch so the batch shrinks as rollouts finish.

Sampling is seeded per chunk (one `torch.Generator` seeded from the chunk's request seeds), so a
given list of requests always gives the same tokens on the same machine and dtype.
"""
from __future__ import annotations

import logging

import torch

from cliffdata.backends.base import Backend, Generation, GenerationRequest, Sampling, group_by_adapter, request_seed

log = logging.getLogger(__name__)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering on (B, V) logits; removed entries become -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def load_adapters(model, adapters: dict[str, str]):
    """`model` wrapped in a PeftModel holding every LoRA adapter folder of `adapters` under its name;
    select one with `set_adapter(name)`, the base with `disable_adapter()`."""
    from peft import PeftModel

    names = sorted(adapters)
    model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    return model


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model_path: str | None = None, dtype: str = "bfloat16", max_batch: int = 128,
                 model=None, eos_token_ids: tuple[int, ...] | None = None, adapters: dict[str, str] | None = None):
        if model is None:
            from transformers import AutoModelForCausalLM
            if model_path is None:
                raise ValueError("HFBackend needs a model_path or a model")
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        if adapters:
            model = load_adapters(model, adapters)
        self.adapters = tuple(sorted(adapters or ()))
        self.model = model.eval()
        if eos_token_ids is None:
            eos = getattr(model.generation_config, "eos_token_id", None) or model.config.eos_token_id
            eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
        if not eos_token_ids or eos_token_ids[0] is None:
            raise ValueError("HFBackend: the model defines no eos_token_id; pass eos_token_ids")
        self.eos_token_ids = tuple(int(e) for e in eos_token_ids)
        self.pad_id = self.eos_token_ids[0]
        self.max_batch = max_batch

    def generate(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        groups = group_by_adapter(requests)
        if len(groups) == 1:
            return self._generate_adapter(groups[0][0], requests, sampling)
        out: list[Generation | None] = [None] * len(requests)
        for adapter, idx in groups:
            for i, gen in zip(idx, self._generate_adapter(adapter, [requests[i] for i in idx], sampling)):
                out[i] = gen
        return out

    def _generate_adapter(self, adapter: str | None, requests: list[GenerationRequest],
                          sampling: Sampling) -> list[Generation]:
        """Requests that all run on `adapter` (None = the base model)."""
        if adapter is None:
            if self.adapters:
                with self.model.disable_adapter():
                    return self._generate_base(requests, sampling)
            return self._generate_base(requests, sampling)
        if adapter not in self.adapters:
            raise ValueError(f"HFBackend: unknown adapter {adapter!r} (opened with {list(self.adapters)})")
        self.model.set_adapter(adapter)
        return self._generate_base(requests, sampling)

    def _generate_base(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        out: list[Generation] = []
        chunk: list[GenerationRequest] = []
        rows = 0
        for req in requests:
            if chunk and rows + req.n > self.max_batch:
                out.extend(self._generate_chunk(chunk, sampling))
                chunk, rows = [], 0
            chunk.append(req)
            rows += req.n
        if chunk:
            out.extend(self._generate_chunk(chunk, sampling))
        return out

    @torch.inference_mode()
    def _generate_chunk(self, requests: list[GenerationRequest], sampling: Sampling) -> list[Generation]:
        device = self.model.device
        width = max(len(r.prompt_ids) for r in requests)
        if width == 0:
            raise ValueError("HFBackend: empty prompt")
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for b, r in enumerate(requests):
            ids[b, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[b, width - len(r.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        prefill = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = prefill.past_key_values

        # Expand each request's cache row to n rows.
        repeats = torch.tensor([r.n for r in requests], device=device)
        row_of = torch.repeat_interleave(torch.arange(len(requests), device=device), repeats)  # (R,)
        cache.batch_select_indices(row_of)
        logits = prefill.logits[:, -1].float()[row_of]                                         # (R, V)
        mask = mask[row_of]
        next_pos = pos[row_of, -1] + 1                                                          # (R,)

        gen = torch.Generator(device="cpu").manual_seed(request_seed(*(r.seed for r in requests)))
        num_rows = len(row_of)
        tokens: list[list[int]] = [[] for _ in range(num_rows)]
        reasons = ["length"] * num_rows
        alive = torch.arange(num_rows, device=device)   # original row index of each batch row
        eos = torch.tensor(self.eos_token_ids, device=device)
        for step in range(sampling.max_new_tokens):
            if sampling.temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p).softmax(-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(-1).to(device)
            for r, t in zip(alive.tolist(), nxt.tolist()):
                tokens[r].append(t)
            done = torch.isin(nxt, eos)
            for r in alive[done].tolist():
                reasons[r] = "stop"
            if step == sampling.max_new_tokens - 1:
                break
            keep = ~done
            if not keep.any():
                break
            if done.any():
                idx = keep.nonzero().squeeze(-1)
                cache.batch_select_indices(idx)
                alive, nxt, mask, next_pos = alive[idx], nxt[idx], mask[idx], next_pos[idx]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            step_out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                                  past_key_values=cache, use_cache=True)
            logits = step_out.logits[:, -1].float()
            next_pos = next_pos + 1

        out, start = [], 0
        for r in requests:
            rows = range(start, start + r.n)
            limit = r.max_new_tokens or sampling.max_new_tokens     # a request's own limit: cut, it is "length"
            out.append(Generation(tuple(tuple(tokens[i][:limit]) for i in rows),
                                  tuple("length" if len(tokens[i]) > limit else reasons[i] for i in rows)))
            start += r.n
        return out

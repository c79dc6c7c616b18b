"""Single-token DPO with LoRA (protocol §6): sigmoid DPO on log π(token | prefix), reference = the base
model (the same PEFT model with its adapter disabled).

    model = add_lora(base, r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"])
    history = train_dpo(model, train_rows, hp, eos_id=tok.eos_token_id, pad_id=padding_id(tok))
    pairs, source = read_pairs(variants)                 # every variant of a run (the dpo_train stage)
    results = train_all(pairs, source, hp, hp.workers)   # largest first, workers side by side, same pairs once

Why an explicit loss and not TRL's `DPOTrainer` (measured with TRL 1.16, ../shared/notes): the stock
trainer cannot train exact single-token pairs (text input appends EOS and re-tokenises, which moved
token boundaries in 19/64 pairs; pre-tokenised rows fail in dataset preparation), and the working
subclass overrides a private hook (`_prepare_dataset`). The loss here is a few lines over next-token
log-probabilities: every side's completion is a list of (context, token) queries, contexts are deduped
(the pairs of one cliff share their prefix, so one forward serves all of them) and each unique context
gets one forward with `logits_to_keep=1`. It was 3x faster than the TRL subclass on this CPU.

`append_eos` (paper: true) makes each side's completion `[token, eos]` as the reference code does, so
its log-probability is log π(token | x) + log π(eos | x + token); false (default) is the single-token
form. Loss (Rafailov et al. 2023, eq. 7), with log-ratios r = log π_θ − log π_ref:

    loss = −log σ(β · ((r_chosen) − (r_rejected)))
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cliffdata import schema
from cliffdata.config.dpo import DPOTrainConfig

log = logging.getLogger(__name__)


def completion_queries(prompt_ids: Sequence[int], token_id: int, append_eos: bool,
                       eos_id: int | None) -> list[tuple[tuple[int, ...], int]]:
    """The (context, next token) queries whose log-probabilities sum to log π(completion | prompt).

    One query (the token after the prefix) in the single-token form; two with `append_eos`.
    """
    prompt = tuple(int(t) for t in prompt_ids)
    queries = [(prompt, int(token_id))]
    if append_eos:
        if eos_id is None:
            raise ValueError("append_eos needs the tokenizer's eos_token_id, got None")
        queries.append((prompt + (int(token_id),), int(eos_id)))
    return queries


def padding_id(tokenizer) -> int:
    """The id left padding uses: the tokenizer's pad token, else its EOS (masked out either way)."""
    for pad in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if pad is not None:
            return int(pad)
    raise ValueError(f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: neither pad_token_id nor eos_token_id is "
                     "set; set one in its tokenizer_config.json")


def next_token_logprobs(model, contexts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """log π(· | context) for each context, (B, V), in one left-padded forward with explicit positions."""
    width = max(len(c) for c in contexts)
    device = next(model.parameters()).device
    ids = torch.tensor([[pad_id] * (width - len(c)) + list(c) for c in contexts], device=device)       # (B, T)
    mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)    # (B, T)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)          # left padding: positions start at each row's first token
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1)
    return F.log_softmax(out.logits[:, -1].float(), dim=-1)                                         # (B, V)


def sequence_logprobs(model, rows: Sequence[dict], append_eos: bool, eos_id: int | None,
                      pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) completion log-probabilities, each (B,), with one forward per unique context."""
    sides = []
    for r in rows:
        sides.append(completion_queries(r["prompt_ids"], r["chosen_id"], append_eos, eos_id))
        sides.append(completion_queries(r["prompt_ids"], r["rejected_id"], append_eos, eos_id))
    contexts = sorted({ctx for queries in sides for ctx, _ in queries})
    where = {ctx: j for j, ctx in enumerate(contexts)}
    logp = next_token_logprobs(model, contexts, pad_id)                                             # (C, V)
    totals = torch.stack([sum(logp[where[ctx], tok] for ctx, tok in queries) for queries in sides])  # (2B,)
    return totals[0::2], totals[1::2]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Sigmoid DPO loss (mean over pairs) and its batch statistics (rewards are β·log-ratios)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    stats = {"loss": float(loss.detach()), "reward_accuracy": float((margin > 0).float().mean()),
             "margin": float(margin.detach().mean()), "chosen_reward": float(chosen_reward.detach().mean()),
             "rejected_reward": float(rejected_reward.detach().mean())}
    return loss, stats


@torch.no_grad()
def reference_logprobs(model, rows: Sequence[dict], hp: DPOTrainConfig, eos_id: int | None, pad_id: int,
                       batch_size: int = 32) -> torch.Tensor:
    """(N, 2) chosen / rejected completion log-probabilities under the reference (adapter disabled).

    The reference never changes during training, so it is computed once per pair, not once per step.
    """
    out = []
    with model.disable_adapter():
        for s in range(0, len(rows), batch_size):
            out.append(torch.stack(sequence_logprobs(model, rows[s:s + batch_size], hp.append_eos, eos_id, pad_id), -1))
    return torch.cat(out) if out else torch.zeros((0, 2))


def pair_loss(model, rows: Sequence[dict], hp: DPOTrainConfig, eos_id: int | None, pad_id: int,
              reference: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The DPO loss of a batch of pairs on a PEFT model; the reference is the same model, adapter off
    (`reference`: its (B, 2) log-probabilities, when already computed)."""
    policy_c, policy_r = sequence_logprobs(model, rows, hp.append_eos, eos_id, pad_id)
    if reference is None:
        reference = reference_logprobs(model, rows, hp, eos_id, pad_id)
    return dpo_loss(policy_c, policy_r, reference[:, 0], reference[:, 1], hp.beta)


def add_lora(base, r: int, alpha: int, dropout: float, target_modules: Sequence[str], seed: int = 0):
    """Wrap `base` in a fresh LoRA adapter (PEFT); base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     task_type="CAUSAL_LM", bias="none")
    return get_peft_model(base, cfg)


def _batches(n: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Shuffled index batches, a fresh seeded permutation per epoch (the last batch may be smaller)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(n)
        out += [order[s:s + batch_size] for s in range(0, n, batch_size)]
    return out


@torch.no_grad()
def evaluate_pairs(model, rows: Sequence[dict], hp: DPOTrainConfig, eos_id: int | None, pad_id: int,
                   batch_size: int = 32) -> dict[str, float]:
    """Loss, reward accuracy and margin over `rows` (e.g. the held-out pairs), pair-weighted means."""
    if not rows:
        return {}
    model.eval()
    totals: dict[str, float] = {}
    for s in range(0, len(rows), batch_size):
        batch = rows[s:s + batch_size]
        _, stats = pair_loss(model, batch, hp, eos_id, pad_id)
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v * len(batch)
    return {k: v / len(rows) for k, v in totals.items()}


def train_dpo(model, rows: Sequence[dict], hp: DPOTrainConfig, eos_id: int | None, pad_id: int,
              on_step: Callable[[int, dict[str, float]], None] | None = None,
              desc: str = "dpo_train") -> list[dict[str, float]]:
    """Train the adapter of a PEFT `model` on pair rows (dicts with prompt_ids, chosen_id, rejected_id).

    AdamW on the trainable (LoRA) parameters, linear warmup then cosine decay, gradient clipping.
    Returns one dict per optimizer step (step, loss, reward_accuracy, margin, chosen/rejected reward,
    learning_rate); `on_step(step, stats)` is called after each step.
    """
    from transformers import get_cosine_schedule_with_warmup

    if hp.batch_size < 1 or hp.epochs < 1:
        raise ValueError(f"batch_size and epochs must be >= 1, got {hp.batch_size}, {hp.epochs}")
    if not rows:
        log.warning("no training pairs: the adapter stays at its initialisation (equal to the base model)")
        return []
    torch.manual_seed(hp.seed)
    batches = _batches(len(rows), hp.batch_size, hp.epochs, hp.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (expected a PEFT model with a LoRA adapter)")
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(hp.warmup_ratio * len(batches)), len(batches))
    model.eval()                                  # no dropout in the reference pass
    reference = reference_logprobs(model, rows, hp, eos_id, pad_id)
    history = []
    model.train()
    bar = tqdm(batches, desc=desc, unit="step")
    for step, idx in enumerate(bar, start=1):
        loss, stats = pair_loss(model, [rows[i] for i in idx], hp, eos_id, pad_id, reference[torch.as_tensor(idx)])
        bar.set_postfix(loss=f"{stats['loss']:.4f}", acc=f"{stats['reward_accuracy']:.2f}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        stats = {"step": step, **stats, "learning_rate": scheduler.get_last_lr()[0]}
        history.append(stats)
        if on_step is not None:
            on_step(step, stats)
    model.eval()
    return history


def save_adapter(model, folder) -> None:
    """`model.save_pretrained(folder)` with a byte-stable adapter_config.json.

    PEFT keeps `target_modules` as a set and writes it in set order, which follows Python's per-process
    string hash seed: the same adapter then hashes differently in every run and DVC re-runs everything
    downstream. The list is sorted and the keys written in order.
    """
    import json
    from pathlib import Path

    model.save_pretrained(folder)
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_cost(train_rows: Sequence[dict], heldout_rows: Sequence[dict], hp: DPOTrainConfig) -> int:
    """Context tokens one adapter's training reads (epochs over the training pairs, plus the held-out
    pairs before and after): the order in which `dpo_train` hands variants to its workers, largest first."""
    return hp.epochs * sum(len(r["prompt_ids"]) for r in train_rows) + 2 * sum(len(r["prompt_ids"]) for r in heldout_rows)


def train_adapter(base: str | Path, train_rows: Sequence[dict], heldout_rows: Sequence[dict], hp: DPOTrainConfig,
                  out: str | Path, desc: str = "dpo_train") -> dict:
    """One adapter from the base model at `base`, saved to `out`: the held-out statistics before and
    after training, the per-step history, the padding id and the seconds it took.

    Self-contained (it loads the tokenizer and the model and sets `hp.threads` torch threads), so that
    `dpo_train` can run it in worker processes; the result depends only on the pairs (in order), `hp` and
    the thread count: the same inputs give the same adapter bytes in any process.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(hp.threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    pad_id = padding_id(tokenizer)
    model = add_lora(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), hp.lora_r, hp.lora_alpha,
                     hp.lora_dropout, hp.target_modules, hp.seed)
    started = time.perf_counter()
    before = evaluate_pairs(model, heldout_rows, hp, tokenizer.eos_token_id, pad_id)
    history = train_dpo(model, train_rows, hp, tokenizer.eos_token_id, pad_id, desc=desc)
    after = evaluate_pairs(model, heldout_rows, hp, tokenizer.eos_token_id, pad_id)
    save_adapter(model, out)
    return {"history": history, "before": before, "after": after, "pad_id": pad_id,
            "seconds": time.perf_counter() - started}


# --- every variant of a run ----------------------------------------------------------------------

def pair_content(rows: list[dict]) -> tuple:
    """What training reads of a variant's pairs, in order: two variants with equal content train equal adapters."""
    return tuple((tuple(r["prompt_ids"]), r["chosen_id"], r["rejected_id"]) for r in rows)


def read_pairs(variants: list[str]) -> tuple[dict[str, tuple[list[dict], list[dict]]], dict[str, str]]:
    """Each variant's (train, heldout) pairs, and the variant that trains its adapter: itself, or the first
    variant before it with the same content."""
    pairs, source, first = {}, {}, {}
    for variant in variants:
        rows = schema.read("dpo_pairs", Path(f"data/dpo_pairs/{variant}.parquet")).to_pylist()
        pairs[variant] = ([r for r in rows if r["split"] == "train"], [r for r in rows if r["split"] == "heldout"])
        source[variant] = first.setdefault((pair_content(pairs[variant][0]), pair_content(pairs[variant][1])), variant)
    return pairs, source


def train_all(pairs: dict[str, tuple[list[dict], list[dict]]], source: dict[str, str], cfg, workers: int,
              into: Path = Path("models/adapters")) -> dict[str, dict]:
    """Every variant's adapter in `into`/<variant>.tmp: the variants that are their own `source` trained,
    `workers` processes side by side (largest first; 1: in this process), the others copies of their
    source's. Returns the training results by trained variant."""
    jobs = {v: pairs[v] for v in pairs if source[v] == v}
    results = _train(jobs, cfg, workers, into)
    for variant, trained in source.items():
        if trained != variant:
            shutil.rmtree(into / f"{variant}.tmp", ignore_errors=True)
            shutil.copytree(into / f"{trained}.tmp", into / f"{variant}.tmp")
    return results


def _train(jobs: dict[str, tuple[list[dict], list[dict]]], cfg, workers: int, into: Path) -> dict[str, dict]:
    order = sorted(jobs, key=lambda v: -train_cost(*jobs[v], cfg))
    tmp = {v: into / f"{v}.tmp" for v in order}
    for path in tmp.values():
        shutil.rmtree(path, ignore_errors=True)
    if workers <= 1 or len(order) <= 1:
        return {v: train_adapter("models/base", *jobs[v], cfg, tmp[v], desc=f"dpo_train {v}") for v in order}
    # spawn: a fresh interpreter per worker (fork would copy this process' state into each)
    with ProcessPoolExecutor(max_workers=min(workers, len(order)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {v: pool.submit(train_adapter, "models/base", *jobs[v], cfg, tmp[v], f"dpo_train {v}") for v in order}
        return {v: futures[v].result() for v in order}

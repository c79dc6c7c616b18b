"""The model's hidden state at each response token of a trace, from one teacher-forced pass, cut down by a
fixed Gaussian projection (`risk_labels.hidden`): the input of the risk stage's linear probe.

    project = HiddenProjector(model, {trace_id: (prompt_ids, response_ids)}, params.risk_labels.hidden)
    project(trace_id, np.array([3, 4, 9]))         # (3, dim) float32: the states at response tokens 3, 4, 9

The state at token i is the one at the position of response token i itself, after the model has read it:
it knows the token, as the token's other features do (its π_s, rank), and nothing after it. The
projection R (hidden size × dim) has independent N(0, 1/dim) entries drawn from `seed`, the same for every
trace, so distances between states are kept up to a small distortion (Johnson-Lindenstrauss) and a linear
probe on R·h is a linear probe on h restricted to a random subspace.
"""
from __future__ import annotations

import numpy as np

from cliffdata.config.risk import HiddenConfig


def hidden_states(model, prompt_ids: list[int], response_ids: list[int], layer: int) -> np.ndarray:
    """(T, H) float64: `hidden_states[layer]` of a causal LM at each of the T response tokens, from one
    teacher-forced pass over prompt + response (layer 0: the embeddings; L: the last layer's output)."""
    import torch

    ids = torch.tensor([list(prompt_ids) + list(response_ids)], device=model.device)      # (1, P + T)
    with torch.inference_mode():
        # one logit row is enough: the pass is for the states, not the next-token distribution
        out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
    states = out.hidden_states
    if layer >= len(states):
        raise ValueError(f"risk_labels.hidden.layer must be at most {len(states) - 1} (the model's layers), got {layer}")
    return states[layer][0, len(prompt_ids):].double().cpu().numpy()                       # (T, H)


def projection_matrix(hidden_size: int, dim: int, seed: int) -> np.ndarray:
    """(hidden_size, dim) float64 with independent N(0, 1/dim) entries drawn from `seed`."""
    return np.random.default_rng(seed).standard_normal((hidden_size, dim)) / np.sqrt(dim)


class HiddenProjector:
    """`labels.Projector` for a model and the traces' token ids: (trace_id, token indices) -> (k, dim) float32."""

    def __init__(self, model, traces: dict[str, tuple[list[int], list[int]]], cfg: HiddenConfig):
        self.model = model
        self.traces = traces
        self.cfg = cfg
        self._matrix: np.ndarray | None = None

    def __call__(self, trace_id: str, token_index: np.ndarray) -> np.ndarray:
        prompt_ids, response_ids = self.traces[trace_id]
        states = hidden_states(self.model, prompt_ids, response_ids, self.cfg.layer)        # (T, H)
        if self._matrix is None:
            self._matrix = projection_matrix(states.shape[1], self.cfg.dim, self.cfg.seed)
        return (states[np.asarray(token_index, dtype=np.int64)] @ self._matrix).astype(np.float32)   # (k, dim)

"""Cliff risk before any rollout: labels from the rollouts' tested pairs with features no rollout needs
(`labels`, `hidden`), risk models fit with problems kept apart (`model`), their evaluation on held-out
problems (`metrics`, `evaluate`) and the registered model (`registry`). docs/risk.md."""

"""The potential search: how the rollouts estimate p[i] after every token. One module per search mode
(`exhaustive`, `adaptive`, `forks`; `pts`, the bisection baseline of the benchmark) over what they share
(`base`); `rollouts` runs them on traces in waves, `ray_rollouts` over a Ray actor pool, `shards` splits the
traces into DVC stages; `curves` and `simulate` run the searches on simulated potential curves."""

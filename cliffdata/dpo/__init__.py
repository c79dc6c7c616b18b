"""Cliff-DPO (protocol §6): preference pairs at cliff positions, single-token DPO with LoRA, the MLflow
record and registry of adapters, evaluation, and the post-training cliff count.

    pairs.py     build_pairs: candidates + cliffs -> pair rows (cliff_1N, cliff_hard), category variants
    train.py     the single-token DPO loss on log π(token | prefix) and the LoRA training loop
    registry.py  MLflow: adapter as a pyfunc model (base path in its config), registry versions, promotion
    evaluate.py  greedy accuracy with adapters, paired bootstrap interval of the difference to baseline
"""

"""The paper's experiments on cliffs (protocol §5), a module each: `replicate`, the deletion `ablation`,
candidate replacement and CPM (`candidates`), the random-position control of Cliff-DPO (`controls`), and
the cliff sets read by another model (`cpm_shift`).

Pure functions that build the experiment prefixes and rows; `pipeline/replicate.py`, `pipeline/ablation.py`
and `pipeline/candidates.py` read the datasets, call these and write the outs. Every rollout goes through
`generate.sampling.resample` (graded on decode(prefix + continuation)), one call per problem (its gold:
`resample.resample_by_problem`).

Prefixes, as response token ids of the trace (protocol §1; positions 0-based):

    del           response_ids[:i]                 cliff token i removed, resample from there
    keep          response_ids[:i+1]
    critical_del  response_ids[:critical_index]    failed traces: truncate before the critical token
    random_del    response_ids[:j]                 failed traces: j uniform in [0, T), seeded per trace
    candidate c   response_ids[:i] + [c]
    replicate     response_ids[:i] and response_ids[:i+1]: p[i-1] and p[i] again, fresh seeds
    control j     response_ids[:j], response_ids[:j+1] and response_ids[:j] + [c]: a random non-cliff
                  position j of the same trace (the Cliff-DPO control)
"""

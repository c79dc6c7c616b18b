-- Cliff evidence: p-values in [0, 1], max_drop in [0, 1], feasibility known exactly when
-- max_drop is (token_stats without sampler_prob leave both null).
select
    trace_id,
    token_index,
    p_value,
    max_drop,
    feasible
from cliffs
where p_value is null
    or p_value not between 0 and 1
    or max_drop not between -1e-12 and 1 + 1e-12
    or (feasible is null) <> (max_drop is null)
order by
    trace_id,
    token_index

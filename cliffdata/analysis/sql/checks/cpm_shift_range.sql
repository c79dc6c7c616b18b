-- Both CPMs lie in [0, 1] (1e-6 slack: float32 probabilities), ΔCPM is their difference, the cliff set
-- holds at least the cliff token, and ranks are tie-aware top-20 ranks (1..21).
with

final as (
    select
        source_model,
        eval_model,
        trace_id,
        token_index,
        cpm_source,
        cpm_eval,
        delta_cpm
    from cpm_shift
    where cpm_source is null
        or cpm_eval is null
        or cpm_source < 0
        or cpm_source > 1 + 1e-6
        or cpm_eval < 0
        or cpm_eval > 1 + 1e-6
        or abs(delta_cpm - (cpm_eval - cpm_source)) > 1e-9
        or num_cliff_set < 1
        or rank_eval not between 1 and 21
        or rank_source not between 1 and 21
)

select
    *
from final
order by
    source_model,
    eval_model,
    trace_id,
    token_index

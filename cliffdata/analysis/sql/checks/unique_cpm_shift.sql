-- One cpm_shift row per (source_model, eval_model, trace_id, token_index).
with

counted as (
    select
        source_model,
        eval_model,
        trace_id,
        token_index,
        count(*) as num_rows
    from cpm_shift
    group by all
),

final as (
    select
        *
    from counted
    where num_rows > 1
)

select
    *
from final
order by
    source_model,
    eval_model,
    trace_id,
    token_index

-- The cliff probability mass of every cliff is in [0, 1] (1e-6 slack: top-20 probabilities are float32).
with

per_cliff as (
    select
        trace_id,
        token_index,
        coalesce(sum(prob) filter (where is_cliff), 0) as cpm
    from candidates
    group by
        trace_id,
        token_index
),

final as (
    select
        trace_id,
        token_index,
        cpm
    from per_cliff
    where cpm is null
        or cpm < 0
        or cpm > 1 + 1e-6
)

select
    *
from final
order by
    trace_id,
    token_index

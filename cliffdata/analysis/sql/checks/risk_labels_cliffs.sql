-- The risk labels' cliffs are the cliffs dataset's: the same pairs, tested by the same test, so a cliff
-- in one and not in the other (or at another p_prev, potential or p-value) is a row here.
with labelled as (
    select
        trace_id,
        token_index,
        p_prev,
        potential,
        p_value
    from risk_labels
    where is_cliff
),

found as (
    select
        trace_id,
        token_index,
        p_prev,
        potential,
        p_value
    from cliffs
),

final as (
    select
        coalesce(l.trace_id, f.trace_id) as trace_id,
        coalesce(l.token_index, f.token_index) as token_index,
        l.trace_id is not null as in_risk_labels,
        f.trace_id is not null as in_cliffs
    from labelled as l
    full outer join found as f
        on l.trace_id = f.trace_id
        and l.token_index = f.token_index
    where l.trace_id is null
        or f.trace_id is null
        or abs(l.p_prev - f.p_prev) > 1e-12
        or abs(l.potential - f.potential) > 1e-12
        or abs(l.p_value - f.p_value) > 1e-12
)

select *
from final
order by
    trace_id,
    token_index

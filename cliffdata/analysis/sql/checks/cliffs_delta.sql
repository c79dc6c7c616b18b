-- A cliff is a drop: delta = p_prev - potential and delta > 0 (protocol §2).
select
    trace_id,
    token_index,
    p_prev,
    potential,
    delta
from cliffs
where delta is null
    or delta <= 0
    or abs(delta - (p_prev - potential)) > 1e-12
order by
    trace_id,
    token_index

-- p_prev and potential of every cliff are probabilities in [0, 1].
select
    trace_id,
    token_index,
    p_prev,
    potential
from cliffs
where p_prev is null
    or potential is null
    or p_prev not between 0 and 1
    or potential not between 0 and 1
order by
    trace_id,
    token_index

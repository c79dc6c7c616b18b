-- Every potential is a probability in [0, 1].
select
    trace_id,
    token_index,
    potential
from potentials
where potential is null
    or potential < 0
    or potential > 1
order by
    trace_id,
    token_index

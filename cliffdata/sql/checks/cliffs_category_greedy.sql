-- The category agrees with greediness (protocol §4): greedy cliffs are deterministic or uncertain,
-- the others sampled_off or other.
select
    trace_id,
    token_index,
    is_greedy,
    category
from cliffs
where is_greedy is null
    or (is_greedy and category not in ('deterministic', 'uncertain'))
    or (not is_greedy and category not in ('sampled_off', 'other'))
order by
    trace_id,
    token_index

-- Risk labels: every probability in [0, 1] (the p-value too), the relative position in [0, 1], and the
-- features' order: the greedy token's pi_s is at least the token's, the top list's margin at most its
-- first probability, max_drop = 1 - sampler_prob.
select
    trace_id,
    token_index,
    p_prev,
    potential,
    p_value,
    sampler_prob,
    greedy_sampler_prob,
    max_drop,
    top_prob,
    margin,
    relative_position
from risk_labels
where p_prev not between 0 and 1
    or potential not between 0 and 1
    or p_value not between 0 and 1
    or sampler_prob not between 0 and 1
    or greedy_sampler_prob not between 0 and 1
    or max_drop not between -1e-12 and 1 + 1e-12
    or top_prob not between 0 and 1
    or margin not between 0 and 1
    or relative_position not between 0 and 1
    or greedy_sampler_prob < sampler_prob - 1e-9
    or margin > top_prob + 1e-12
    or abs(max_drop - (1 - sampler_prob)) > 1e-9
order by
    trace_id,
    token_index

-- A candidate's fresh estimate is its counts (p_prev = num_correct_prev / num_rollouts_prev, the counts in
-- range), and a cliff has at most one chosen control, within one rollout step (1/N) of the cliff's p[i-1].
select
    cliff_trace_id,
    cliff_index,
    trace_id,
    token_index,
    p_prev,
    cliff_p_prev,
    is_chosen
from matched_controls as m
where num_rollouts_prev is null
    or num_rollouts_prev < 1
    or num_correct_prev not between 0 and num_rollouts_prev
    or abs(p_prev - num_correct_prev / num_rollouts_prev) > 1e-9
    or is_chosen is null
    or (is_chosen and abs(p_prev - cliff_p_prev) > 1.0 / num_rollouts_prev + 1e-9)
    or (is_chosen and (
        select count(*) from matched_controls as o
        where o.cliff_trace_id = m.cliff_trace_id and o.cliff_index = m.cliff_index and o.is_chosen) > 1)
order by
    cliff_trace_id,
    cliff_index,
    trace_id,
    token_index

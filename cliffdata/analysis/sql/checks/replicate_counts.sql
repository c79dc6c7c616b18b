-- Replicate rows: counts within [0, N] on both sides, potentials equal to the counts' ratio.
select
    trace_id,
    token_index,
    num_correct_prev,
    num_rollouts_prev,
    num_correct,
    num_rollouts
from replicate
where num_rollouts_prev < 1
    or num_rollouts < 1
    or num_correct_prev not between 0 and num_rollouts_prev
    or num_correct not between 0 and num_rollouts
    or abs(p_prev - num_correct_prev / num_rollouts_prev) > 1e-12
    or abs(potential - num_correct / num_rollouts) > 1e-12
order by
    trace_id,
    token_index

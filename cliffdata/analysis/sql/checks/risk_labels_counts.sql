-- Risk labels: both sides scored (N >= 1), counts within [0, N], potentials equal to the counts' ratio,
-- delta = p_prev - potential.
select
    trace_id,
    token_index,
    num_correct_prev,
    num_rollouts_prev,
    num_correct,
    num_rollouts,
    delta
from risk_labels
where num_rollouts_prev is null
    or num_rollouts is null
    or num_rollouts_prev < 1
    or num_rollouts < 1
    or num_correct_prev not between 0 and num_rollouts_prev
    or num_correct not between 0 and num_rollouts
    or abs(p_prev - num_correct_prev / num_rollouts_prev) > 1e-12
    or abs(potential - num_correct / num_rollouts) > 1e-12
    or delta is null
    or abs(delta - (p_prev - potential)) > 1e-12
order by
    trace_id,
    token_index

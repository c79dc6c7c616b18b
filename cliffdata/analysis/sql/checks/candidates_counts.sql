-- Candidate counts are in range and potentials are their ratios (so in [0, 1]), on both sides of the
-- cliff test; probabilities are in [0, 1].
select
    trace_id,
    token_index,
    candidate_id,
    num_rollouts,
    num_correct,
    potential,
    num_rollouts_prev,
    num_correct_prev,
    p_prev,
    prob
from candidates
where num_rollouts is null
    or num_correct is null
    or potential is null
    or num_rollouts_prev is null
    or num_correct_prev is null
    or p_prev is null
    or prob is null
    or num_rollouts < 1
    or num_correct not between 0 and num_rollouts
    or abs(potential - num_correct / num_rollouts) > 1e-12
    or num_rollouts_prev < 1
    or num_correct_prev not between 0 and num_rollouts_prev
    or abs(p_prev - num_correct_prev / num_rollouts_prev) > 1e-12
    or prob not between 0 and 1
order by
    trace_id,
    token_index,
    candidate_id

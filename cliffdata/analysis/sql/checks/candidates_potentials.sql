-- Candidates reuse the main rollout: p_prev's counts are the potentials row at token_index - 1, and the
-- cliff token's counts are the potentials row at token_index.
select
    c.trace_id,
    c.token_index,
    c.candidate_id,
    c.is_cliff_token,
    c.num_correct_prev,
    c.num_rollouts_prev,
    prev.num_correct as main_num_correct_prev,
    prev.num_rollouts as main_num_rollouts_prev,
    c.num_correct,
    c.num_rollouts,
    cur.num_correct as main_num_correct,
    cur.num_rollouts as main_num_rollouts
from candidates as c
left join potentials as prev
    on prev.trace_id = c.trace_id
    and prev.token_index = c.token_index - 1
left join potentials as cur
    on cur.trace_id = c.trace_id
    and cur.token_index = c.token_index
where prev.trace_id is null
    or c.num_correct_prev is distinct from prev.num_correct
    or c.num_rollouts_prev is distinct from prev.num_rollouts
    or (c.is_cliff_token and (c.num_correct is distinct from cur.num_correct
        or c.num_rollouts is distinct from cur.num_rollouts))
order by
    c.trace_id,
    c.token_index,
    c.candidate_id

-- Candidates take p_prev's counts and the cliff token's counts from one source per cliff: the main
-- rollout (the potentials rows at token_index - 1 and token_index; the paper) or, with
-- candidates.fresh_estimates, the replicate stage's fresh rollouts on both sides of the cliff.
with

sources as (
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
        cur.num_rollouts as main_num_rollouts,
        r.num_correct_prev as fresh_num_correct_prev,
        r.num_rollouts_prev as fresh_num_rollouts_prev,
        r.num_correct as fresh_num_correct,
        r.num_rollouts as fresh_num_rollouts
    from candidates as c
    left join potentials as prev
        on prev.trace_id = c.trace_id
        and prev.token_index = c.token_index - 1
    left join potentials as cur
        on cur.trace_id = c.trace_id
        and cur.token_index = c.token_index
    left join replicate as r
        on r.trace_id = c.trace_id
        and r.token_index = c.token_index
)

select
    trace_id,
    token_index,
    candidate_id,
    is_cliff_token,
    num_correct_prev,
    num_rollouts_prev,
    main_num_correct_prev,
    main_num_rollouts_prev,
    num_correct,
    num_rollouts,
    main_num_correct,
    main_num_rollouts
from sources
where not coalesce(
        num_correct_prev = main_num_correct_prev
        and num_rollouts_prev = main_num_rollouts_prev
        and (not is_cliff_token or (num_correct = main_num_correct and num_rollouts = main_num_rollouts)),
        false)
    and not coalesce(
        num_correct_prev = fresh_num_correct_prev
        and num_rollouts_prev = fresh_num_rollouts_prev
        and (not is_cliff_token or (num_correct = fresh_num_correct and num_rollouts = fresh_num_rollouts)),
        false)
order by
    trace_id,
    token_index,
    candidate_id

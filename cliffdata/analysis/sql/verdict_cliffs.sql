-- One row per cliff the experiments ran on (`cliffs.use`), with what the verdicts resample: its problem
-- and trace (the units), its category and cliff sets (feasible; replicated, null where the replicate
-- stage did not test it), the Cliff-del and Cliff-keep pass@1 of its prefix (mean potential of each arm,
-- null where the ablation did not run it), the same two arms at its matched control position
-- (`ablation.matched_control`; null without one), and its CPM (the sampler probability of the
-- candidates that are cliffs) with and without the cliff token's own probability.
with

arms as (
    select
        trace_id,
        token_index,
        max(potential) filter (where arm = 'del') as del_pass_at_1,
        max(potential) filter (where arm = 'keep') as keep_pass_at_1
    from ablation
    where arm in ('del', 'keep')
    group by
        trace_id,
        token_index
),

matched_arms as (
    select
        cliff_trace_id as trace_id,
        cliff_index as token_index,
        max(potential) filter (where arm = 'matched_del') as matched_del_pass_at_1,
        max(potential) filter (where arm = 'matched_keep') as matched_keep_pass_at_1
    from ablation
    where arm in ('matched_del', 'matched_keep')
    group by
        cliff_trace_id,
        cliff_index
),

cpm_per_cliff as (
    select
        trace_id,
        token_index,
        coalesce(sum(prob) filter (where is_cliff), 0) as cpm,
        coalesce(sum(prob) filter (where is_cliff and not is_cliff_token), 0) as cpm_alternatives
    from candidates
    group by
        trace_id,
        token_index
)

select
    c.trace_id,
    c.problem_id,
    c.token_index,
    c.is_correct,
    c.category,
    c.feasible,
    r.replicated,
    a.del_pass_at_1,
    a.keep_pass_at_1,
    m.matched_del_pass_at_1,
    m.matched_keep_pass_at_1,
    p.cpm,
    p.cpm_alternatives
from cliffs as c
left join replicate as r
    on r.trace_id = c.trace_id
    and r.token_index = c.token_index
left join arms as a
    on a.trace_id = c.trace_id
    and a.token_index = c.token_index
left join matched_arms as m
    on m.trace_id = c.trace_id
    and m.token_index = c.token_index
left join cpm_per_cliff as p
    on p.trace_id = c.trace_id
    and p.token_index = c.token_index
order by
    c.trace_id,
    c.token_index

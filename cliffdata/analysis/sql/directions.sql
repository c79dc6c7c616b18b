-- The paper's directions re-checked on the cliffs that hold up (the noise audit): for every cliff set
-- (all cliffs; the feasible ones, whose token can carry a detectable drop by the sampler identity;
-- the replicated ones, whose test passed again on fresh rollouts), RQ1 on failed traces (Cliff-del
-- vs Cliff-keep pass@1 = mean potential, and pass@N = share of instances with a correct rollout) and
-- RQ2/3 (mean CPM by category). Only cliffs the experiments ran on count (`cliffs.use`).
with

cliff_sets as (
    select
        *
    from (
        values
            (1, 'all'),
            (2, 'feasible'),
            (3, 'replicated')
    ) as s(set_order, cliff_set)
),

membership as (
    select
        c.trace_id,
        c.token_index,
        c.category,
        s.set_order,
        s.cliff_set
    from cliffs as c
    left join replicate as r
        on r.trace_id = c.trace_id
        and r.token_index = c.token_index
    cross join cliff_sets as s
    where s.cliff_set = 'all'
        or (s.cliff_set = 'feasible' and c.feasible)
        or (s.cliff_set = 'replicated' and coalesce(r.replicated, false))
),

ablation_by_set as (
    select
        m.cliff_set,
        count(*) filter (where a.arm = 'del') as num_failed_cliffs,
        avg(a.potential) filter (where a.arm = 'del') as del_pass_at_1,
        avg(a.potential) filter (where a.arm = 'keep') as keep_pass_at_1,
        avg((a.num_correct > 0)::int) filter (where a.arm = 'del') as del_pass_at_n,
        avg((a.num_correct > 0)::int) filter (where a.arm = 'keep') as keep_pass_at_n
    from membership as m
    inner join ablation as a
        on a.trace_id = m.trace_id
        and a.token_index = m.token_index
        and a.arm in ('del', 'keep')
    where a.is_correct = false
    group by m.cliff_set
),

cpm_per_cliff as (
    select
        trace_id,
        token_index,
        coalesce(sum(prob) filter (where is_cliff), 0) as cpm
    from candidates
    group by
        trace_id,
        token_index
),

cpm_by_set as (
    select
        m.cliff_set,
        count(*) filter (where m.category = 'deterministic') as num_deterministic,
        avg(p.cpm) filter (where m.category = 'deterministic') as cpm_deterministic,
        count(*) filter (where m.category = 'uncertain') as num_uncertain,
        avg(p.cpm) filter (where m.category = 'uncertain') as cpm_uncertain,
        count(*) filter (where m.category = 'sampled_off') as num_sampled_off,
        avg(p.cpm) filter (where m.category = 'sampled_off') as cpm_sampled_off
    from membership as m
    inner join cpm_per_cliff as p
        on p.trace_id = m.trace_id
        and p.token_index = m.token_index
    group by m.cliff_set
),

set_sizes as (
    select
        cliff_set,
        count(*) as num_cliffs
    from membership
    group by cliff_set
),

final as (
    select
        s.set_order,
        s.cliff_set,
        coalesce(n.num_cliffs, 0) as num_cliffs,
        coalesce(a.num_failed_cliffs, 0) as num_failed_cliffs,
        a.del_pass_at_1,
        a.keep_pass_at_1,
        a.del_pass_at_n,
        a.keep_pass_at_n,
        coalesce(c.num_deterministic, 0) as num_deterministic,
        c.cpm_deterministic,
        coalesce(c.num_uncertain, 0) as num_uncertain,
        c.cpm_uncertain,
        coalesce(c.num_sampled_off, 0) as num_sampled_off,
        c.cpm_sampled_off
    from cliff_sets as s
    left join set_sizes as n
        on n.cliff_set = s.cliff_set
    left join ablation_by_set as a
        on a.cliff_set = s.cliff_set
    left join cpm_by_set as c
        on c.cliff_set = s.cliff_set
)

select
    * exclude (set_order)
from final
order by set_order

-- Replication: the share of cliffs whose test passes again on fresh rollouts on both
-- sides (data/replicate), overall and by category, feasibility (the sampler identity) and trace
-- correctness, with 95% Wilson intervals, and the cost of the replication in generated tokens.
with

replicate_rows as (
    select
        category,
        feasible,
        case
            when is_correct then 'correct'
            when not is_correct then 'failed'
            else 'ungradable'
        end as correctness,
        replicated,
        num_rollouts_prev + num_rollouts as num_rollouts,
        num_generated_tokens
    from replicate
),

groups as (
    select 1 as group_order, 'all' as "group", * from replicate_rows
    union all
    select 2, 'category=' || category, * from replicate_rows
    union all
    select 3, 'feasible=' || feasible::varchar, * from replicate_rows
    union all
    select 4, 'correctness=' || correctness, * from replicate_rows
),

counted as (
    select
        min(group_order) as group_order,
        "group",
        count(*) as num_cliffs,
        count(*) filter (where replicated) as num_replicated,
        sum(num_rollouts)::bigint as num_rollouts,
        sum(num_generated_tokens)::bigint as num_generated_tokens
    from groups
    group by "group"
),

-- Wilson score interval, z = 1.96
wilson as (
    select
        *,
        num_replicated / num_cliffs as rate,
        1.96 as z
    from counted
),

final as (
    select
        group_order,
        "group",
        num_cliffs,
        num_replicated,
        rate,
        ((rate + z * z / (2 * num_cliffs))
            - z * sqrt(rate * (1 - rate) / num_cliffs + z * z / (4 * num_cliffs * num_cliffs)))
            / (1 + z * z / num_cliffs) as rate_lo,
        ((rate + z * z / (2 * num_cliffs))
            + z * sqrt(rate * (1 - rate) / num_cliffs + z * z / (4 * num_cliffs * num_cliffs)))
            / (1 + z * z / num_cliffs) as rate_hi,
        num_rollouts,
        num_generated_tokens
    from wilson
)

select
    * exclude (group_order)
from final
order by
    group_order,
    "group"

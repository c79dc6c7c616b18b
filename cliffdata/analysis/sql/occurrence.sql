-- Occurrence (protocol §5, RQ1): per trace-correctness group and overall, the share of traces with
-- at least one cliff, cliffs per trace and per 1k response tokens, and where cliffs fall (thirds of
-- the response), for all cliffs and for the first cliff of each trace; and the noise audit:
-- tested pairs, cliffs expected from noise alone (the sum of each pair's null firing
-- probability), the excess of observed over expected with a 95% interval (observed minus the exact
-- 97.5% and 2.5% quantiles of the false-cliff count, a Poisson-binomial over the tested pairs:
-- null_count_quantile), the excess and its bounds clipped to [0, observed], and the feasible share
-- of cliffs and positions.
-- $include_empty_prefix: false drops cliffs at token_index 0 (paper mode: p[-1] is not scored), so
-- the first cliff is then the first one after token 0.
with

correctness_groups as (
    select
        *
    from (
        values
            (1, 'correct'),
            (2, 'failed'),
            (3, 'ungradable'),
            (4, 'all')
    ) as g(group_order, correctness)
),

trace_groups as (
    select
        trace_id,
        num_tokens,
        num_scored,
        num_feasible,
        expected_false_cliffs,
        false_cliffs_variance,
        null_fire_cells,
        case
            when is_correct then 'correct'
            when not is_correct then 'failed'
            else 'ungradable'
        end as correctness
    from trace_cliffs
),

included_cliffs as (
    select
        trace_id,
        token_index,
        third,
        feasible
    from cliffs
    where $include_empty_prefix or token_index > 0
),

first_cliffs as (
    select
        trace_id,
        arg_min(third, token_index) as first_third
    from included_cliffs
    group by trace_id
),

per_trace as (
    select
        t.trace_id,
        t.correctness,
        t.num_tokens,
        t.num_scored,
        t.num_feasible,
        t.expected_false_cliffs,
        t.false_cliffs_variance,
        count(c.token_index) as num_cliffs,
        count(c.token_index) filter (where c.feasible) as num_feasible_cliffs,
        count(c.token_index) filter (where c.third = 'early') as num_early,
        count(c.token_index) filter (where c.third = 'mid') as num_mid,
        count(c.token_index) filter (where c.third = 'late') as num_late
    from trace_groups as t
    left join included_cliffs as c
        on c.trace_id = t.trace_id
    group by
        t.trace_id,
        t.correctness,
        t.num_tokens,
        t.num_scored,
        t.num_feasible,
        t.expected_false_cliffs,
        t.false_cliffs_variance
),

per_trace_first as (
    select
        p.*,
        f.first_third
    from per_trace as p
    left join first_cliffs as f
        on f.trace_id = p.trace_id
),

-- the null law of each group's false-cliff count: its tested pairs by firing probability
null_cells as (
    select
        correctness,
        cell.q as q,
        cell.num_pairs as num_pairs
    from (
        select
            correctness,
            unnest(null_fire_cells) as cell
        from trace_groups
        union all
        select
            'all' as correctness,
            unnest(null_fire_cells) as cell
        from trace_groups
    )
),

null_laws as (
    select
        correctness,
        list({'q': q, 'num_pairs': num_pairs} order by q) as cells
    from (
        select
            correctness,
            q,
            sum(num_pairs)::bigint as num_pairs
        from null_cells
        group by
            correctness,
            q
    )
    group by correctness
),

-- every trace counts in its own group and in 'all'
grouped as (
    select
        correctness,
        * exclude (correctness)
    from per_trace_first
    union all
    select
        'all' as correctness,
        * exclude (correctness)
    from per_trace_first
),

aggregated as (
    select
        correctness,
        count(*) as num_traces,
        count(*) filter (where num_cliffs > 0) as num_traces_with_cliff,
        sum(num_cliffs)::bigint as num_cliffs,
        sum(num_tokens)::bigint as num_tokens,
        sum(num_early)::bigint as num_early,
        sum(num_mid)::bigint as num_mid,
        sum(num_late)::bigint as num_late,
        sum(num_scored)::bigint as num_tested_pairs,
        sum(num_feasible)::bigint as num_feasible_pairs,
        sum(num_feasible_cliffs)::bigint as num_feasible_cliffs,
        sum(expected_false_cliffs)::double as expected_false_cliffs,
        sum(false_cliffs_variance)::double as false_cliffs_variance,
        count(*) filter (where first_third = 'early') as num_first_early,
        count(*) filter (where first_third = 'mid') as num_first_mid,
        count(*) filter (where first_third = 'late') as num_first_late
    from grouped
    group by correctness
),

filled as (
    select
        g.group_order,
        g.correctness,
        coalesce(a.num_traces, 0) as num_traces,
        coalesce(a.num_traces_with_cliff, 0) as num_traces_with_cliff,
        coalesce(a.num_cliffs, 0) as num_cliffs,
        coalesce(a.num_tokens, 0) as num_tokens,
        coalesce(a.num_early, 0) as num_early,
        coalesce(a.num_mid, 0) as num_mid,
        coalesce(a.num_late, 0) as num_late,
        coalesce(a.num_first_early, 0) as num_first_early,
        coalesce(a.num_first_mid, 0) as num_first_mid,
        coalesce(a.num_first_late, 0) as num_first_late,
        coalesce(a.num_tested_pairs, 0) as num_tested_pairs,
        coalesce(a.num_feasible_pairs, 0) as num_feasible_pairs,
        coalesce(a.num_feasible_cliffs, 0) as num_feasible_cliffs,
        coalesce(a.expected_false_cliffs, 0) as expected_false_cliffs,
        coalesce(a.false_cliffs_variance, 0) as false_cliffs_variance,
        null_count_quantile(coalesce(n.cells, []), 0.025) as false_cliffs_q025,
        null_count_quantile(coalesce(n.cells, []), 0.975) as false_cliffs_q975
    from correctness_groups as g
    left join aggregated as a
        on a.correctness = g.correctness
    left join null_laws as n
        on n.correctness = g.correctness
),

final as (
    select
        group_order,
        correctness,
        num_traces,
        num_traces_with_cliff,
        num_traces_with_cliff / nullif(num_traces, 0) as share_with_cliff,
        num_cliffs,
        num_cliffs / nullif(num_traces, 0) as cliffs_per_trace,
        num_tokens,
        1000.0 * num_cliffs / nullif(num_tokens, 0) as cliffs_per_1k_tokens,
        num_early / nullif(num_cliffs, 0) as share_early,
        num_mid / nullif(num_cliffs, 0) as share_mid,
        num_late / nullif(num_cliffs, 0) as share_late,
        num_traces_with_cliff as num_first_cliffs,
        num_first_early / nullif(num_traces_with_cliff, 0) as first_share_early,
        num_first_mid / nullif(num_traces_with_cliff, 0) as first_share_mid,
        num_first_late / nullif(num_traces_with_cliff, 0) as first_share_late,
        num_tested_pairs,
        expected_false_cliffs,
        greatest(num_cliffs - expected_false_cliffs, 0) as excess_cliffs,
        greatest(num_cliffs - false_cliffs_q975, 0)::double as excess_cliffs_lo,
        greatest(num_cliffs - false_cliffs_q025, 0)::double as excess_cliffs_hi,
        num_feasible_cliffs / nullif(num_cliffs, 0) as share_cliffs_feasible,
        num_feasible_pairs / nullif(num_tested_pairs, 0) as share_pairs_feasible
    from filled
)

select
    * exclude (group_order)
from final
order by group_order

-- The study's occurrence table (protocol §5 RQ1, RQ3: family and scale): per model of the study and
-- trace-correctness group (correct, failed, all), the share of traces with at least one cliff, cliffs
-- per trace and per 1k response tokens, and the noise audit beside them (tested pairs, cliffs expected
-- from noise alone, the excess with its exact 95% interval: occurrence.sql). Models in family, size order; a model without a
-- trace of a group has a zero row. Views: study.models, study.trace_cliffs, study.cliffs.
-- $include_empty_prefix: false drops cliffs at token_index 0 (paper mode).
with

correctness_groups as (
    select
        *
    from (
        values
            (1, 'correct'),
            (2, 'failed'),
            (3, 'all')
    ) as g(group_order, correctness)
),

included_cliffs as (
    select
        model,
        trace_id,
        count(*) as num_cliffs
    from study.cliffs
    where $include_empty_prefix or token_index > 0
    group by
        model,
        trace_id
),

per_trace as (
    select
        t.model,
        case
            when t.is_correct then 'correct'
            when not t.is_correct then 'failed'
        end as correctness,
        t.num_tokens,
        t.num_scored,
        t.expected_false_cliffs,
        t.false_cliffs_variance,
        t.null_fire_cells,
        coalesce(c.num_cliffs, 0) as num_cliffs
    from study.trace_cliffs as t
    left join included_cliffs as c
        on c.model = t.model
        and c.trace_id = t.trace_id
),

-- every trace counts in its own group (ungradable ones only in 'all') and in 'all'
grouped as (
    select
        *
    from per_trace
    where correctness is not null
    union all
    select
        * replace ('all' as correctness)
    from per_trace
),

-- the null law of each group's false-cliff count: its tested pairs by firing probability
null_laws as (
    select
        model,
        correctness,
        list({'q': q, 'num_pairs': num_pairs} order by q) as cells
    from (
        select
            model,
            correctness,
            cell.q as q,
            sum(cell.num_pairs)::bigint as num_pairs
        from (
            select
                model,
                correctness,
                unnest(null_fire_cells) as cell
            from grouped
        )
        group by
            model,
            correctness,
            q
    )
    group by
        model,
        correctness
),

aggregated as (
    select
        model,
        correctness,
        count(*) as num_traces,
        count(*) filter (where num_cliffs > 0) as num_traces_with_cliff,
        sum(num_cliffs)::bigint as num_cliffs,
        sum(num_tokens)::bigint as num_tokens,
        sum(num_scored)::bigint as num_tested_pairs,
        sum(expected_false_cliffs)::double as expected_false_cliffs,
        sum(false_cliffs_variance)::double as false_cliffs_variance
    from grouped
    group by
        model,
        correctness
),

filled as (
    select
        m.model_order,
        g.group_order,
        m.model,
        m.family,
        m.size_b,
        g.correctness,
        coalesce(a.num_traces, 0) as num_traces,
        coalesce(a.num_traces_with_cliff, 0) as num_traces_with_cliff,
        coalesce(a.num_cliffs, 0) as num_cliffs,
        coalesce(a.num_tokens, 0) as num_tokens,
        coalesce(a.num_tested_pairs, 0) as num_tested_pairs,
        coalesce(a.expected_false_cliffs, 0) as expected_false_cliffs,
        coalesce(a.false_cliffs_variance, 0) as false_cliffs_variance,
        null_count_quantile(coalesce(n.cells, []), 0.025) as false_cliffs_q025,
        null_count_quantile(coalesce(n.cells, []), 0.975) as false_cliffs_q975
    from study.models as m
    cross join correctness_groups as g
    left join aggregated as a
        on a.model = m.model
        and a.correctness = g.correctness
    left join null_laws as n
        on n.model = m.model
        and n.correctness = g.correctness
),

final as (
    select
        family,
        size_b,
        model_order,
        group_order,
        model,
        correctness,
        num_traces,
        num_traces_with_cliff,
        num_traces_with_cliff / nullif(num_traces, 0) as share_with_cliff,
        num_cliffs,
        num_cliffs / nullif(num_traces, 0) as cliffs_per_trace,
        1000.0 * num_cliffs / nullif(num_tokens, 0) as cliffs_per_1k_tokens,
        num_tested_pairs,
        expected_false_cliffs,
        greatest(num_cliffs - expected_false_cliffs, 0) as excess_cliffs,
        greatest(num_cliffs - false_cliffs_q975, 0)::double as excess_cliffs_lo,
        greatest(num_cliffs - false_cliffs_q025, 0)::double as excess_cliffs_hi
    from filled
)

select
    * exclude (model_order, group_order)
from final
order by
    family,
    size_b nulls last,
    model_order,
    group_order

-- The study's taxonomy table (protocol §5 RQ2, RQ3): per model, its cliffs by category, the shares
-- within the three-way taxonomy (deterministic, uncertain, sampled_off; 'other' counted, excluded), and
-- the greedy share of its cliffs. Models in family, size order. Views: study.models, study.cliffs.
-- $include_empty_prefix: false drops cliffs at token_index 0 (paper mode).
with

included_cliffs as (
    select
        model,
        category,
        is_greedy
    from study.cliffs
    where $include_empty_prefix or token_index > 0
),

counted as (
    select
        model,
        count(*) as num_cliffs,
        count(*) filter (where category = 'deterministic') as num_deterministic,
        count(*) filter (where category = 'uncertain') as num_uncertain,
        count(*) filter (where category = 'sampled_off') as num_sampled_off,
        count(*) filter (where category = 'other') as num_other,
        count(*) filter (where is_greedy) as num_greedy
    from included_cliffs
    group by model
),

filled as (
    select
        m.model_order,
        m.model,
        m.family,
        m.size_b,
        coalesce(c.num_cliffs, 0) as num_cliffs,
        coalesce(c.num_deterministic, 0) as num_deterministic,
        coalesce(c.num_uncertain, 0) as num_uncertain,
        coalesce(c.num_sampled_off, 0) as num_sampled_off,
        coalesce(c.num_other, 0) as num_other,
        coalesce(c.num_greedy, 0) as num_greedy
    from study.models as m
    left join counted as c
        on c.model = m.model
),

final as (
    select
        family,
        size_b,
        model_order,
        model,
        num_cliffs,
        num_deterministic,
        num_uncertain,
        num_sampled_off,
        num_other,
        num_deterministic / nullif(num_cliffs - num_other, 0) as share_deterministic,
        num_uncertain / nullif(num_cliffs - num_other, 0) as share_uncertain,
        num_sampled_off / nullif(num_cliffs - num_other, 0) as share_sampled_off,
        num_greedy / nullif(num_cliffs, 0) as share_greedy
    from filled
)

select
    * exclude (model_order)
from final
order by
    family,
    size_b nulls last,
    model_order

-- The study's CPM table (protocol §5 RQ2/3): per model, the mean cliff probability mass of its cliffs by
-- category (cpm = the summed probabilities of the candidates that are cliffs relative to p_prev, the
-- sampled cliff token included: cpm_by_category.sql's definition). Models in family, size order.
-- Views: study.models, study.candidates, study.cliffs.
with

per_cliff as (
    select
        model,
        trace_id,
        token_index,
        coalesce(sum(prob) filter (where is_cliff), 0) as cpm
    from study.candidates
    group by
        model,
        trace_id,
        token_index
),

with_category as (
    select
        p.model,
        c.category,
        p.cpm
    from per_cliff as p
    inner join study.cliffs as c
        on c.model = p.model
        and c.trace_id = p.trace_id
        and c.token_index = p.token_index
),

aggregated as (
    select
        model,
        count(*) as num_cliffs,
        avg(cpm) as cpm_mean,
        avg(cpm) filter (where category = 'deterministic') as cpm_deterministic,
        avg(cpm) filter (where category = 'uncertain') as cpm_uncertain,
        avg(cpm) filter (where category = 'sampled_off') as cpm_sampled_off,
        count(*) filter (where category = 'deterministic') as num_deterministic,
        count(*) filter (where category = 'uncertain') as num_uncertain,
        count(*) filter (where category = 'sampled_off') as num_sampled_off
    from with_category
    group by model
),

final as (
    select
        m.family,
        m.size_b,
        m.model_order,
        m.model,
        coalesce(a.num_cliffs, 0) as num_cliffs,
        a.cpm_mean,
        coalesce(a.num_deterministic, 0) as num_deterministic,
        a.cpm_deterministic,
        coalesce(a.num_uncertain, 0) as num_uncertain,
        a.cpm_uncertain,
        coalesce(a.num_sampled_off, 0) as num_sampled_off,
        a.cpm_sampled_off
    from study.models as m
    left join aggregated as a
        on a.model = m.model
)

select
    * exclude (model_order)
from final
order by
    family,
    size_b nulls last,
    model_order

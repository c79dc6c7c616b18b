-- The study's ΔCPM table (protocol §5 RQ3): per direction (the source model's cliffs read by the eval
-- model: both directions of every same-tokenizer pair) and category of the source's cliff, the mean CPM
-- under each model, the mean ΔCPM = cpm_eval - cpm_source, and the share of cliffs whose CPM falls.
-- `scale`: up (the eval model is larger), down (smaller), same, or null (a size unknown). One row per
-- direction and category that has cliffs, plus 'all'. Views: study.models, study_cpm_shift.
with

categories as (
    select
        *
    from (
        values
            (1, 'deterministic'),
            (2, 'uncertain'),
            (3, 'sampled_off'),
            (4, 'other'),
            (5, 'all')
    ) as c(category_order, category)
),

grouped as (
    select
        source_model,
        eval_model,
        category,
        cpm_source,
        cpm_eval,
        delta_cpm
    from study_cpm_shift
    union all
    select
        source_model,
        eval_model,
        'all' as category,
        cpm_source,
        cpm_eval,
        delta_cpm
    from study_cpm_shift
),

aggregated as (
    select
        source_model,
        eval_model,
        category,
        count(*) as num_cliffs,
        avg(cpm_source) as cpm_source_mean,
        avg(cpm_eval) as cpm_eval_mean,
        avg(delta_cpm) as delta_cpm_mean,
        avg((delta_cpm < 0)::integer) as share_cpm_down
    from grouped
    group by
        source_model,
        eval_model,
        category
),

final as (
    select
        s.model_order as source_order,
        e.model_order as eval_order,
        c.category_order,
        a.source_model || ' -> ' || a.eval_model as direction,
        a.source_model,
        a.eval_model,
        s.family as source_family,
        s.size_b as source_size_b,
        e.family as eval_family,
        e.size_b as eval_size_b,
        case
            when s.size_b is null or e.size_b is null then null
            when e.size_b > s.size_b then 'up'
            when e.size_b < s.size_b then 'down'
            else 'same'
        end as scale,
        a.category,
        a.num_cliffs,
        a.cpm_source_mean,
        a.cpm_eval_mean,
        a.delta_cpm_mean,
        a.share_cpm_down
    from aggregated as a
    inner join study.models as s
        on s.model = a.source_model
    inner join study.models as e
        on e.model = a.eval_model
    inner join categories as c
        on c.category = a.category
)

select
    * exclude (source_order, eval_order, category_order)
from final
order by
    source_order,
    eval_order,
    category_order

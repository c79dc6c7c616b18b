-- CPM shift by taxonomy and direction (protocol §5 RQ3): the source's cliff sets read by the eval model.
-- Direction = source_model -> eval_model. Per category (and 'all'): cliffs, mean CPM of both models,
-- mean ΔCPM, the share of cliffs whose CPM fell, the mean rank shift of the cliff token (eval − source,
-- positive = the eval model ranks it lower) and the share of cliff tokens still greedy under the eval model.
with

grouped as (
    select
        source_model,
        eval_model,
        category,
        * exclude (source_model, eval_model, category)
    from cpm_shift
    union all
    select
        source_model,
        eval_model,
        'all' as category,
        * exclude (source_model, eval_model, category)
    from cpm_shift
),

final as (
    select
        source_model || ' -> ' || eval_model as direction,
        category,
        count(*)::bigint as num_cliffs,
        avg(cpm_source)::double as cpm_source_mean,
        avg(cpm_eval)::double as cpm_eval_mean,
        avg(delta_cpm)::double as delta_cpm_mean,
        avg((delta_cpm < 0)::int)::double as share_cpm_down,
        avg(rank_eval - rank_source)::double as rank_shift_mean,
        avg(is_greedy_eval::int)::double as greedy_eval_share
    from grouped
    group by
        source_model,
        eval_model,
        category
)

select
    *
from final
order by
    direction,
    case category
        when 'deterministic' then 1
        when 'uncertain' then 2
        when 'sampled_off' then 3
        when 'other' then 4
        else 5
    end

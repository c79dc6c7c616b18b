"""`Params`: every section of `params.yaml`, one frozen dataclass each, and the checks across sections."""
from __future__ import annotations

from dataclasses import dataclass, field

from cliffdata.config.analysis import AnalysisConfig, EntropyConfig, VerdictsConfig
from cliffdata.config.cliffs import CliffsConfig
from cliffdata.config.dpo import CliffCountConfig, DPOEvalConfig, DPOPairsConfig, DPOTrainConfig
from cliffdata.config.experiments import AblationConfig, CandidatesConfig, CPMShiftConfig, ReplicateConfig
from cliffdata.config.generate import EngineConfig, GradingConfig, SampleConfig, TokenStatsConfig
from cliffdata.config.model import ModelConfig
from cliffdata.config.problems import ProblemsConfig, PromptConfig
from cliffdata.config.publish import ReportConfig
from cliffdata.config.risk import RiskConfig, RiskLabelsConfig
from cliffdata.config.search import RolloutsConfig
from cliffdata.config.study import StudyConfig
from cliffdata.config.validate import check


@dataclass(frozen=True)
class Params:
    problems: ProblemsConfig
    prompts: dict[str, PromptConfig]
    model: ModelConfig = ModelConfig()
    engine: EngineConfig = EngineConfig()
    grading: GradingConfig = GradingConfig()
    sample: SampleConfig = SampleConfig()
    token_stats: TokenStatsConfig = TokenStatsConfig()
    rollouts: RolloutsConfig = RolloutsConfig()
    cliffs: CliffsConfig = field(kw_only=True)     # required: its `test` has no default (params.yaml only)
    replicate: ReplicateConfig = ReplicateConfig()
    ablation: AblationConfig = AblationConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    entropy: EntropyConfig = EntropyConfig()
    dpo_pairs: DPOPairsConfig = DPOPairsConfig()
    dpo_train: DPOTrainConfig = DPOTrainConfig()
    dpo_eval: DPOEvalConfig | None = None
    cliff_count: CliffCountConfig = CliffCountConfig()
    cpm_shift: CPMShiftConfig = CPMShiftConfig()
    report: ReportConfig = ReportConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    study: StudyConfig = StudyConfig()
    verdicts: VerdictsConfig | None = None          # how the summary decides; required by that stage (no defaults)
    risk_labels: RiskLabelsConfig | None = None     # cliff risk before any rollout: required by its stages
    risk: RiskConfig | None = None                  # (no defaults)

    def __post_init__(self):
        used = {s.prompt for s in self.problems.sources}
        used |= {p for s in self.problems.sources for p in s.family_prompts.values()}
        for src in self.dpo_eval.sources if self.dpo_eval else ():
            used |= {src.prompt, *src.family_prompts.values()}
        missing = used - set(self.prompts)
        check(not missing, f"problems.sources name prompts {sorted(missing)} that are not in `prompts`")
        clash = self.model.name in self.study.models
        check(not clash, f"study.models.{self.model.name}: the pipeline's own model (model.source) has that name; "
                         f"name the study's other models differently")
        # cross-section limits, checked at load time rather than when the later stage runs
        check(self.candidates.top_k <= self.token_stats.top_k,
              f"candidates.top_k must be <= token_stats.top_k = {self.token_stats.top_k} (candidates come from the "
              f"stored top list), got {self.candidates.top_k}")
        check(self.dpo_pairs.top_k <= self.candidates.top_k,
              f"dpo_pairs.top_k must be <= candidates.top_k = {self.candidates.top_k}, got {self.dpo_pairs.top_k}")
        check(self.cpm_shift.top_k <= self.token_stats.top_k,
              f"cpm_shift.top_k must be <= token_stats.top_k = {self.token_stats.top_k}, got {self.cpm_shift.top_k}")
        # cliff_count runs the rollouts search (rollouts.mode and its settings) at its own N: the search's
        # starting n must fit in it, as RolloutsConfig asks of rollouts.num_rollouts
        start = {"forks": ("rollouts.forks.initial_rollouts", self.rollouts.forks.initial_rollouts),
                 "adaptive": ("rollouts.adaptive.initial_rollouts", self.rollouts.adaptive.initial_rollouts)}
        if self.rollouts.mode in start:
            key, n0 = start[self.rollouts.mode]
            check(n0 <= self.cliff_count.num_rollouts,
                  f"cliff_count.num_rollouts must be >= {key} = {n0} (cliff_count runs the rollouts.mode "
                  f"{self.rollouts.mode} search at its own N), got {self.cliff_count.num_rollouts}")
        sections = [("problems.sources", self.problems.sources)]
        sections += [("dpo_eval.sources", self.dpo_eval.sources)] if self.dpo_eval else []
        for where, sources in sections:
            for i, src in enumerate(sources):
                if src.answer_format is None:
                    continue
                for name in sorted({src.prompt, *src.family_prompts.values()}):
                    asks = self.prompts[name].asks_for
                    check(asks in (None, src.answer_format),
                          f"{where}[{i}].answer_format is {src.answer_format!r} but its prompt {name!r} asks for "
                          f"{asks!r} answers (prompts.{name}): drop answer_format to grade by what the prompt asks")

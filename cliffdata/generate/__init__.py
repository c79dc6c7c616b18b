"""Generation: the traces (`sampling`: sample, grade, and `resample`, the one rollout-and-grade helper every
stage uses) and the teacher-forced pass over them (`token_stats`)."""

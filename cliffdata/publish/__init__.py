"""What leaves the pipeline: the trace explorer (`report/`), exports (`export`), the offline `dvc plots`
page (`plots`) and the guards on where a command may write (`outputs`)."""

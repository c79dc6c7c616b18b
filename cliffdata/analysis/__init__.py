"""Analysis over the datasets: DuckDB views, SQL tables and checks (`duck`, `sql/`), the sandbox of
`cliffdata sql` (`sandbox`), the run's summary (`summary`) and seeded synthetic studies (`synthetic`)."""

"""Airflow-facing operators: submit, land results, and the one-task operator that does both; thin over the stages."""

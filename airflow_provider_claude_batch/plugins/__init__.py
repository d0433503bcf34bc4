"""Airflow plugins the provider registers: the "Claude Batches" view in the API server."""

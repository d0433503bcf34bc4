"""Airflow-facing triggers: poll batches from the triggerer, sharing one client and poller per connection."""

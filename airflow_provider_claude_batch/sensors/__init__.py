"""Airflow-facing sensors: wait for batches to end, in a worker slot or deferred to the triggerer."""

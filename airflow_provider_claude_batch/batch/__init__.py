"""Pure batch logic: no Airflow, no network. Functions take bytes or objects and return decisions."""

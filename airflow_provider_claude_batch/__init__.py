"""Apache Airflow provider for the Claude Message Batches API.

Importing this package (or any of its operator, sensor, trigger and hook modules) does not import
the `anthropic` SDK: DAG files are parsed constantly, and the SDK is only needed when a task runs.
"""

__version__ = "0.1.0"

"""The "Claude Batches" view: what is in flight, what landed (and what it cost), what is about to expire.

`model` turns submission records, landing summaries and List pages into the view's rows (pure),
`render` turns those into HTML with an SVG chart (pure), `sources` reads them from Airflow's
metadata database and the API (the I/O shell). `plugins.claude_batch` serves it in the API server.
"""

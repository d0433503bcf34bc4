"""Waiting for batches to end: a pure core of decisions and two thin I/O shells.

Pure core (no Airflow, network, threads or clock of its own):
- `events`: a batch's snapshot and the outcome a wait ends with (the trigger event's payload);
- `tracker`: `WaitTracker`, the wait's decisions (poll again after how long, or finish), poll delays;
- `errors`: what a failed API call means, `decide_after_error` (also the queue trigger's rule);
- `listing`: one shared poll cycle's decisions (list or retrieve, when paging stops).

I/O shells:
- `loop`: the sync loop in a worker task (sensor poke mode, waiting without deferral);
- `poller`: the triggerer's async poller, shared by every trigger of a connection in one event loop
  (the triggers themselves are declared in `triggers/`); `watch`: one trigger's wait as the
  poller's cycles drive it (the trigger is woken only to log or to end).

The step the operators compose: `waiting.Waiting` (defer to a trigger, or wait in the worker).
"""

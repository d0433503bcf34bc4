"""`python -m airflow_provider_claude_batch.emulator`: serve the Batches API emulator on loopback."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from airflow_provider_claude_batch.emulator.control import EmulatorControl
from airflow_provider_claude_batch.emulator.server import serve_forever
from airflow_provider_claude_batch.emulator.store import EmulatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_claude_batch.emulator",
                                     description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: 8765)")
    parser.add_argument("--processing-seconds", type=float, default=EmulatorConfig.processing_seconds,
                        help="how long each batch takes to end (default: %(default)s)")
    parser.add_argument("--api-key", default=EmulatorConfig.api_key,
                        help="the key clients must send (default: %(default)s; '' accepts any key)")
    parser.add_argument("--outcomes", type=Path,
                        help="JSON file with a list of outcome rules, e.g. "
                             '[{"match": "bad-.*", "outcome": "errored", "error_type": "overloaded_error"}]')
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    config = EmulatorConfig(processing_seconds=args.processing_seconds, api_key=args.api_key or None)
    if args.outcomes is not None:
        rules = json.loads(args.outcomes.read_text())
        threading.Thread(target=_load_rules, args=(f"http://{args.host}:{args.port}", rules), daemon=True).start()
    print(f"Claude Message Batches emulator on http://{args.host}:{args.port} "
          f"(API key: {'any' if config.api_key is None else config.api_key})", file=sys.stderr, flush=True)
    serve_forever(config, args.host, args.port, args.log_level)
    return 0


def _load_rules(url: str, rules: list[dict[str, object]]) -> None:
    control = EmulatorControl(url)
    for _ in range(300):
        try:
            control.set_outcomes(*rules)
            return
        except OSError:
            time.sleep(0.1)


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m airflow_provider_claude_batch.emulator`: serve the Batches API emulator on loopback."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
from pathlib import Path

from airflow_provider_claude_batch.emulator.control import EmulatorControl
from airflow_provider_claude_batch.emulator.server import serve_forever
from airflow_provider_claude_batch.emulator.store import EmulatorConfig


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_claude_batch.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind (default: 8765)")
    parser.add_argument(
        "--processing-seconds",
        type=float,
        default=EmulatorConfig.processing_seconds,
        help="how long each batch takes to end (default: %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=EmulatorConfig.api_key,
        help="the key clients must send (default: %(default)s; '' accepts any key)",
    )
    parser.add_argument(
        "--control-token",
        help="a token for the /_emulator/* control routes, sent as x-api-key (they also take "
        "the API key; with --api-key '' a random token is made and printed)",
    )
    parser.add_argument(
        "--outcomes",
        type=Path,
        help="JSON file with a list of outcome rules, e.g. "
        '[{"match": "bad-.*", "outcome": "errored", "error_type": "overloaded_error"}]',
    )
    parser.add_argument(
        "--cache-hit-probability",
        type=float,
        default=EmulatorConfig.cache_hit_probability,
        help="share of a batch's requests that read a prompt-cache entry they find (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    config = EmulatorConfig(processing_seconds=args.processing_seconds, api_key=args.api_key or None)
    if not 0 <= args.cache_hit_probability <= 1:
        parser.error("--cache-hit-probability is a probability: between 0 and 1")
    config.cache_hit_probability = args.cache_hit_probability
    token = args.control_token or (None if config.api_key else secrets.token_urlsafe(24))
    if args.outcomes is not None:
        rules = json.loads(args.outcomes.read_text())
        credential = token or config.api_key or ""
        threading.Thread(
            target=_load_rules, args=(f"http://{args.host}:{args.port}", credential, rules), daemon=True
        ).start()
    control = f"; control token: {token}" if token and not args.control_token else ""
    print(
        f"Claude Message Batches emulator on http://{args.host}:{args.port} "
        f"(API key: {'any' if config.api_key is None else config.api_key}{control})",
        file=sys.stderr,
        flush=True,
    )
    serve_forever(config, args.host, args.port, args.log_level, token)
    return 0


def _load_rules(url: str, credential: str, rules: list[dict[str, object]]) -> None:
    control = EmulatorControl(url, credential)
    for _ in range(300):
        try:
            control.set_outcomes(*rules)
            return
        except OSError:
            time.sleep(0.1)


if __name__ == "__main__":
    raise SystemExit(main())

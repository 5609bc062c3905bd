"""The app container's preStop hook, for a service other apps invoke through Dapr in the
chart's explicit sidecar mode (services.<name>.dapr.invocationTarget):

    python -m todo_shared.prestop --sleep 10 --stop-dapr-after 7

The hook waits ``--sleep`` seconds in all, as the plain sleep hook does, so the endpoints and
the ingress drop the pod before the app gets SIGTERM. ``--stop-dapr-after`` seconds into that
wait it asks the pod's daprd to shut down (``DaprClient.shutdown``, with the
``DAPR_HTTP_PORT`` and ``DAPR_API_TOKEN`` the app runs with). daprd is a native sidecar there:
left alone it would outlive the app, and the other apps' daprd, each holding a gRPC connection
to it, would keep passing calls to the app's closed port. Stopped, it closes those
connections; they dial the app's Service again, whose rules no longer lead here by then (the
first seconds of the wait are for that), and land on a live replica, while this app still
answers what is in flight (the rest of the wait).

A sidecar that cannot be reached or refuses is reported on stderr (the kubelet records a
hook's output only when it fails) and the hook still sleeps and succeeds: the pod stops either
way, and failing the hook would only cut the sleep short.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from todo_shared.dapr import DaprClient, DaprError


async def stop_dapr() -> str | None:
    """Ask the sidecar to shut down; the reason when it did not, else None."""
    port = os.environ.get("DAPR_HTTP_PORT")
    if not port:
        return "DAPR_HTTP_PORT is not set: no sidecar to stop"
    async with DaprClient(int(port), api_token=os.environ.get("DAPR_API_TOKEN"), timeout=3) as dapr:
        try:
            await dapr.shutdown()
        except DaprError as exc:
            return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m todo_shared.prestop", description="The preStop hook.")
    parser.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS", help="wait this long in all")
    parser.add_argument(
        "--stop-dapr-after",
        type=float,
        metavar="SECONDS",
        help="shut the pod's daprd down this far into the wait",
    )
    args = parser.parse_args(argv)
    if args.sleep < 0:
        parser.error("--sleep must be 0 or more")
    stop_after = args.stop_dapr_after
    if stop_after is not None and not 0 <= stop_after <= args.sleep:
        parser.error("--stop-dapr-after must be between 0 and --sleep")
    started = time.monotonic()
    if stop_after is not None:
        time.sleep(stop_after)
        if problem := asyncio.run(stop_dapr()):
            print(f"preStop: daprd was not stopped: {problem}", file=sys.stderr)
    time.sleep(max(0.0, args.sleep - (time.monotonic() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

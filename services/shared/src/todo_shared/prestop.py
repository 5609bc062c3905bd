"""The app container's preStop hook, for a service other apps invoke through Dapr in the
chart's explicit sidecar mode (services.<name>.dapr.invocationTarget):

    python -m todo_shared.prestop --stop-dapr --sleep 5

``--stop-dapr`` asks the pod's daprd to shut down (``DaprClient.shutdown``, with the
``DAPR_HTTP_PORT`` and ``DAPR_API_TOKEN`` the app runs with). daprd is a native sidecar there:
left alone it would outlive the app, and the other apps' daprd, each holding a gRPC connection
to it, would keep passing calls to the app's closed port. Stopped first, it closes those
connections; they reconnect through the app's Service to a live replica while this app
still answers what is in flight. Then ``--sleep`` seconds pass, as the plain sleep hook does,
so the endpoints and the ingress drop the pod before the app gets SIGTERM.

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
    parser.add_argument("--stop-dapr", action="store_true", help="shut the pod's daprd down first")
    parser.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS", help="then wait this long")
    args = parser.parse_args(argv)
    if args.sleep < 0:
        parser.error("--sleep must be 0 or more")
    if args.stop_dapr and (problem := asyncio.run(stop_dapr())):
        print(f"preStop: daprd was not stopped: {problem}", file=sys.stderr)
    time.sleep(args.sleep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

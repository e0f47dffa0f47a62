"""The `omniroute` command: run one service, or the whole system on the embedded stack."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from shared.service import ServiceApp, serve
from shared.settings import (
    IngestSettings,
    NotifySettings,
    RouterSettings,
    ServiceSettings,
    SlaSettings,
)

SERVICES = ("ingest", "router", "sla", "notify")


def _service(name: str) -> tuple[ServiceSettings, Callable[[], ServiceApp]]:
    # Imports stay inside: a container runs one service and needs none of the others.
    if name == "ingest":
        from services.ingest.app import build_app as ingest_app

        ingest_settings = IngestSettings()
        return ingest_settings, lambda: ingest_app(ingest_settings)
    if name == "router":
        from services.router.app import build_app as router_app

        router_settings = RouterSettings()
        return router_settings, lambda: router_app(router_settings)
    if name == "sla":
        from services.sla.app import build_app as sla_app

        sla_settings = SlaSettings()
        return sla_settings, lambda: sla_app(sla_settings)
    from services.notify.app import build_app as notify_app

    notify_settings = NotifySettings()
    return notify_settings, lambda: notify_app(notify_settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omniroute", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SERVICES:
        sub.add_parser(name, help=f"run the {name} service (settings from OMNIROUTE_*)")
    dev = sub.add_parser("dev", help="embedded stack + all services + sample traffic, live")
    dev.add_argument("--agents", type=int, default=3, help="simulated agents")
    dev.add_argument("--rate", type=float, default=1.0, help="sample messages per second")
    dev.add_argument("--data-dir", default=".omniroute/dev", help="where the stack keeps data")
    dev.add_argument("--no-view", action="store_true", help="log lines instead of a live view")
    demo = sub.add_parser("demo", help="a short scripted scenario end to end, then a summary")
    demo.add_argument("--data-dir", default=None, help="keep data here (default: temporary)")
    sub.add_parser("stack", help="only the embedded broker and store, until Ctrl-C")
    args = parser.parse_args(argv)

    if args.command in SERVICES:
        try:
            settings, factory = _service(args.command)
        except ValidationError as exc:
            print(f"omniroute {args.command}: invalid settings:\n{exc}", file=sys.stderr)
            return 2
        serve(factory(), settings)
        return 0
    from services import dev as devmod

    if args.command == "dev":
        return devmod.run_dev(
            agents=args.agents, rate=args.rate, data_dir=args.data_dir, live=not args.no_view
        )
    if args.command == "demo":
        return devmod.run_demo(data_dir=args.data_dir)
    return devmod.run_stack()


if __name__ == "__main__":
    raise SystemExit(main())

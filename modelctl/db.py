"""`modelctl db upgrade` and `modelctl db current`: the prediction log's schema
(common/prediction_log/migrate.py), which the services also upgrade at start-up."""

from __future__ import annotations

import argparse

from alembic.util.exc import CommandError

from common.prediction_log import create_log_engine
from common.prediction_log.migrate import current, head, upgrade
from modelctl.context import Context


def cmd_db(args: argparse.Namespace, ctx: Context) -> int:
    engine = create_log_engine(ctx.settings.database_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if args.action == "upgrade":
            before = current(engine)
            try:
                after = upgrade(engine, args.revision)
            except CommandError as exc:  # an unknown revision, mostly
                raise ValueError(f"{where}: {exc}") from None
            change = "already at" if before == after else f"upgraded from {before or 'nothing'} to"
            ctx.output.line(f"{where}: {change} revision {after}")
        else:
            at = current(engine)
            newest = head()
            state = "the newest" if at == newest else f"the newest is {newest}"
            ctx.output.line(f"{where}: revision {at or 'none'} ({state})")
    finally:
        engine.dispose()
    return 0

"""The ``intramuros`` command: the core's commands, and each installed workload's.

Workloads add their commands through their plug-in (``intramuros.workloads``);
every command reaches the state through the context this group gives it
(:class:`intramuros.platform.cli.CliContext`, here :class:`intramuros.cli.store.Commands`).
The core's command groups live in the submodules (``models``, ``tenants``,
``ledger``); this module adds them to the group.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from intramuros.cli.embed import embed_cmd
from intramuros.cli.ledger import erase, ledger_group, purge
from intramuros.cli.models import models
from intramuros.cli.store import Commands
from intramuros.cli.tenants import keys_group, tenants_group, usage_cmd
from intramuros.errors import IntramurosError
from intramuros.offline import enforce_offline
from intramuros.platform.cli import fail, load_options, settings_options
from intramuros.platform.plugin import installed_workloads


@click.group()
@click.version_option(package_name="intramuros")
@click.pass_context
def main(ctx: click.Context) -> None:
    """intramuros: an OpenAI/Mistral-compatible AI service on open models, within your walls."""
    enforce_offline()
    # Commands report their own errors in one line; `serve` sets up real logging.
    logging.basicConfig(level=logging.CRITICAL)
    ctx.obj = Commands()


# --------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------


@main.command()
@settings_options()
def serve(**options: Any) -> None:
    """Run the API server (OpenAI- and Mistral-compatible) on this machine."""
    import uvicorn

    from intramuros.api.app import create_app
    from intramuros.api.server import AppServer

    try:
        settings = load_options(options)
    except IntramurosError as exc:
        fail(exc)
        return
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    try:
        app = create_app(settings)
    except IntramurosError as exc:
        fail(exc)
        return
    if not settings.auth:
        click.echo(
            "WARNING: authentication is DISABLED (--no-auth). Every caller on this machine is "
            f"an admin of tenant 'default'. Allowed only because {settings.host} is loopback.",
            err=True,
        )
    click.echo(
        f"intramuros serving on http://{settings.host}:{settings.port} "
        f"(data dir {settings.data_dir})",
        err=True,
    )
    # loop="asyncio": uvloop would resolve and connect in C, past the egress guard.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="off",
                            log_level=settings.log_level, timeout_graceful_shutdown=5,
                            loop="asyncio")  # fmt: skip
    try:
        AppServer(config, app).run()
    except KeyboardInterrupt:
        pass
    except IntramurosError as exc:
        fail(exc)



# --------------------------------------------------------------------------
# the core's command groups, tools, and the installed workloads' commands (each
# workload's plug-in names its own)
# --------------------------------------------------------------------------


def _add_commands() -> None:
    # The submodules define their commands unattached: importing this module to
    # attach them would be an import cycle.
    for command in (models, tenants_group, keys_group, usage_cmd, ledger_group, erase, purge,
                    embed_cmd):
        main.add_command(command)

    from intramuros.bench.cli import bench

    main.add_command(bench)
    try:
        workloads = installed_workloads()
    except IntramurosError as exc:  # a broken plug-in: the core's commands still work
        logging.getLogger(__name__).error("%s", exc.message)
        return
    for workload in workloads:
        if workload.cli is not None:
            main.add_command(workload.cli())


_add_commands()

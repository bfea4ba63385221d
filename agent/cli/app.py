"""The `recagent` command group: global options, and every RecagentError turned into one clear line."""

from __future__ import annotations

import click

from recagent.tools.errors import RecagentError
from recagent.tools.settings import Settings


class _Group(click.Group):
    """Turns the errors users can fix into one clear line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RecagentError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            ctx.exit(130)


@click.group(cls=_Group)
@click.option(
    "--home",
    envvar="RECAGENT_HOME",
    type=click.Path(file_okay=False),
    help="Folder for the index and state [env RECAGENT_HOME; default ~/.local/share/recagent].",
)
@click.option(
    "--data",
    envvar="RECAGENT_DATA",
    type=click.Path(file_okay=False),
    help="Data folder holding movielens/, fashion/, redial/ [env RECAGENT_DATA; default ../shared/data].",
)
@click.option(
    "--chroma-url",
    envvar="RECAGENT_CHROMA_URL",
    help="Use a Chroma server (http://HOST:PORT) instead of the embedded store [env RECAGENT_CHROMA_URL].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="RECAGENT_CONFIG",
    help="Config file (TOML) [env RECAGENT_CONFIG; default HOME/config.toml].",
)
@click.version_option(package_name="recagent")
@click.pass_context
def main(
    ctx: click.Context, home: str | None, data: str | None, chroma_url: str | None, config_file: str | None
) -> None:
    """recagent: a conversational recommender you talk to in text, by voice or with a photo."""
    ctx.obj = Settings.load(home=home, data=data, chroma_url=chroma_url, config_file=config_file)

"""The Jinja2 templates of DSNs, owner notices, operators' alerts and the
status page.

Guarantees:
- every template the gateway uses ships inside the package (mailgw/templates/),
  read through importlib.resources, so an installed wheel works wherever it
  is started, with no templates/ directory beside the config;
- an operator replaces a single template by putting a file of the same name
  in `gateway.templates_dir`: that directory is looked in first, the
  package's templates serve the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import jinja2
from jinja2.loaders import split_template_path


class _Packaged(jinja2.BaseLoader):
    """The templates inside the package, found wherever it is installed."""

    def __init__(self) -> None:
        self.root = resources.files("mailgw") / "templates"

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        path = self.root.joinpath(*split_template_path(template))
        try:
            source = path.read_text(encoding="utf-8")
        except OSError:
            raise jinja2.TemplateNotFound(template) from None
        # installed files do not change under a running gateway
        return source, str(path), lambda: True


def environment(override: Path | None) -> jinja2.Environment:
    """The templates: the operator's own directory first (if configured),
    then the package's."""
    mine: list[jinja2.BaseLoader] = [] if override is None else [jinja2.FileSystemLoader(override)]
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([*mine, _Packaged()]),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True)

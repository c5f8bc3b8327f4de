"""Build script: the metadata are in setup.cfg; this adds the long description, the README
with its relative links (``docs/...``) turned into text naming the file, since a package
index page cannot follow them (the files are in the source distribution, MANIFEST.in)."""

import re
from pathlib import Path

from setuptools import setup

# [text](target) whose target is no URL: a file of the repository, maybe with an #anchor
RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?![a-z]+://)([^)#\s]+)(?:#[^)\s]*)?\)")
NOTE = "*The `docs/` files named below come with the source distribution.*\n\n"


def long_description(readme: str) -> str:
    """``readme`` with ``[text](docs/x.md#anchor)`` written as ``text (`docs/x.md`)`` (or
    ``docs/x.md`` when that is the text), and a note on where those files are after the
    title."""

    def as_text(link: re.Match) -> str:
        text, target = link[1], link[2]
        return f"`{target}`" if text.strip("`") == target else f"{text} (`{target}`)"

    title, _, body = readme.partition("\n\n")
    return f"{title}\n\n{NOTE}{RELATIVE_LINK.sub(as_text, body)}"


setup(
    long_description=long_description(Path(__file__).with_name("README.md").read_text()),
    long_description_content_type="text/markdown",
)

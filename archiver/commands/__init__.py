"""Command groups that live in their own modules.

Each module imports ``cli`` (and the shared options) from :mod:`archiver.cli` and registers its commands on it;
:mod:`archiver.cli` imports the modules at its end, so ``archiver --help`` lists every command.
"""

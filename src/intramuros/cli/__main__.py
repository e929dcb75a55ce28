"""``python -m intramuros.cli``: the ``intramuros`` command."""

from intramuros.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()

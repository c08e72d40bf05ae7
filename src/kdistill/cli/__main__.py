"""``python -m kdistill.cli``: the ``kdistill`` command."""

from . import main

if __name__ == "__main__":
    main()

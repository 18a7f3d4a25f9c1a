"""``python -m streamdet`` runs the command-line interface."""

from streamdet.cli import main

raise SystemExit(main())

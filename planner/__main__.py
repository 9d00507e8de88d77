"""`python -m planner` runs the CLI."""

from planner.cli import run

if __name__ == "__main__":
    run()
